package leasehold

import (
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/leasehold/leasehold/internal/leaserecord"
)

// FuzzDecideCampaign feeds arbitrary Lease specs to the decoding and the
// campaign decision. It must never panic, never decide to write while a
// foreign claim is live by the local clock, and never wait past the claim.
// Seeds live in testdata/fuzz/FuzzDecideCampaign.
func FuzzDecideCampaign(f *testing.F) {
	f.Add(true, "b", true, int32(15), true, int32(3), int64(-3600), "", "strategy", int64(1), "7", false, false)
	f.Add(true, "", true, int32(15), false, int32(0), int64(3600), "x", "", int64(0), "1", false, false)
	f.Add(false, "", false, int32(0), false, int32(0), int64(0), "", "", int64(0), "", true, false)
	f.Add(true, "b", true, int32(-1), true, int32(2147483647), int64(0), "unknown", "Weird", int64(14999999999), "9", false, true)
	f.Add(true, "a", true, int32(2147483647), true, int32(-2147483648), int64(0), "a", "OldestEmulationVersion", int64(1<<40), "x", true, false)
	f.Fuzz(func(t *testing.T, hasHolder bool, holder string, hasDur bool, dur int32, hasTr bool, tr int32,
		renewOffset int64, preferred, strategy string, sinceNs int64, rv string, gone, foreignSelf bool) {
		l := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{ResourceVersion: rv}}
		if hasHolder {
			l.Spec.HolderIdentity = ptr.To(holder)
		}
		if hasDur {
			l.Spec.LeaseDurationSeconds = ptr.To(dur)
		}
		if hasTr {
			l.Spec.LeaseTransitions = ptr.To(tr)
		}
		if renewOffset != 0 {
			rt := metav1.NewMicroTime(t0.Add(time.Duration(renewOffset) * time.Second))
			l.Spec.RenewTime = &rt
		}
		if preferred != "" {
			l.Spec.PreferredHolder = ptr.To(preferred)
		}
		if strategy != "" {
			l.Spec.Strategy = ptr.To(coordinationv1.CoordinatedLeaseStrategy(strategy))
		}
		if sinceNs < 0 {
			sinceNs = -sinceNs
		}
		now := t0.Add(time.Duration(sinceNs))
		ld := 15 * time.Second
		v := leaseView{lease: l, observedAt: t0, gone: gone}

		// Decoding never panics and never goes negative.
		if n := nextTransition(l.Spec.LeaseTransitions); n < 1 {
			t.Fatalf("nextTransition = %d", n)
		}
		claim := leaserecord.ClaimDuration(l, ld)
		if claim <= 0 {
			t.Fatalf("claimDuration = %v", claim)
		}

		act, at := decideCampaign(v, "a", foreignSelf, now, ld)
		h := leaserecord.Holder(l)
		liveForeign := h != "" && now.Sub(t0) < claim
		switch act {
		case actWait:
			if !at.After(now) {
				t.Fatalf("wait until %v, not after now %v", at, now)
			}
			if at.After(t0.Add(claim)) {
				t.Fatalf("waits past the claim's expiry")
			}
		case actCreate, actAcquire:
			// A write is allowed only when no holder, or the claim ran
			// out by our clock, or (acquire) the lease is our own write.
			if liveForeign && !(act == actAcquire && h == "a" && !foreignSelf && !gone && v.ownVersion != "") {
				t.Fatalf("decided %v while %q's claim is live (%v of %v)", act, h, now.Sub(t0), claim)
			}
		}
	})
}
