package leasehold

import (
	"math"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/leasehold/leasehold/internal/leaserecord"
)

func leaseWith(holder *string, seconds *int32, rv string) *coordinationv1.Lease {
	return &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{ResourceVersion: rv},
		Spec:       coordinationv1.LeaseSpec{HolderIdentity: holder, LeaseDurationSeconds: seconds},
	}
}

// The campaign decision, as data.
func TestDecideCampaign(t *testing.T) {
	seen := t0
	ld := 15 * time.Second
	for _, tc := range []struct {
		name        string
		view        leaseView
		foreignSelf bool
		now         time.Duration // since seen
		act         campaignAction
		at          time.Duration // since seen, for actWait
	}{
		{"nothing seen: create", leaseView{}, false, 0, actCreate, 0},
		{"no holder: acquire now", leaseView{lease: leaseWith(nil, ptr.To[int32](15), "5"), observedAt: seen}, false, 0, actAcquire, 0},
		{"empty holder with future renewTime: acquire now", leaseView{lease: leaseWith(ptr.To(""), ptr.To[int32](15), "5"), observedAt: seen}, false, 0, actAcquire, 0},
		{"held, fresh: wait until expiry", leaseView{lease: leaseWith(ptr.To("b"), ptr.To[int32](15), "5"), observedAt: seen}, false, time.Second, actWait, 15 * time.Second},
		{"held, 1ns before expiry: wait", leaseView{lease: leaseWith(ptr.To("b"), ptr.To[int32](15), "5"), observedAt: seen}, false, 15*time.Second - 1, actWait, 15 * time.Second},
		{"held, at expiry: acquire", leaseView{lease: leaseWith(ptr.To("b"), ptr.To[int32](15), "5"), observedAt: seen}, false, 15 * time.Second, actAcquire, 0},
		{"holder's longer duration wins", leaseView{lease: leaseWith(ptr.To("b"), ptr.To[int32](60), "5"), observedAt: seen}, false, 20 * time.Second, actWait, 60 * time.Second},
		{"nil duration: ours", leaseView{lease: leaseWith(ptr.To("b"), nil, "5"), observedAt: seen}, false, 0, actWait, 15 * time.Second},
		{"zero duration: ours", leaseView{lease: leaseWith(ptr.To("b"), ptr.To[int32](0), "5"), observedAt: seen}, false, 0, actWait, 15 * time.Second},
		{"negative duration: ours", leaseView{lease: leaseWith(ptr.To("b"), ptr.To[int32](-3), "5"), observedAt: seen}, false, 0, actWait, 15 * time.Second},
		{"huge duration: honoured", leaseView{lease: leaseWith(ptr.To("b"), ptr.To[int32](math.MaxInt32), "5"), observedAt: seen}, false, time.Hour, actWait, math.MaxInt32 * time.Second},
		{"ours by our last write: re-acquire now", leaseView{lease: leaseWith(ptr.To("a"), ptr.To[int32](15), "5"), observedAt: seen, ownVersion: "5"}, false, 0, actAcquire, 0},
		{"names us, not our write: wait", leaseView{lease: leaseWith(ptr.To("a"), ptr.To[int32](15), "6"), observedAt: seen, ownVersion: "5"}, true, 0, actWait, 15 * time.Second},
		{"deleted with live claim: wait, then create", leaseView{lease: leaseWith(ptr.To("b"), ptr.To[int32](15), "5"), observedAt: seen, gone: true}, false, 0, actWait, 15 * time.Second},
		{"deleted, claim expired: create", leaseView{lease: leaseWith(ptr.To("b"), ptr.To[int32](15), "5"), observedAt: seen, gone: true}, false, 15 * time.Second, actCreate, 0},
		{"deleted after release, last state known: create", leaseView{lease: leaseWith(nil, nil, "5"), observedAt: seen, gone: true, goneFinal: true}, false, 0, actCreate, 0},
		{"deleted after a release we saw, last state unknown: wait a lease duration", leaseView{lease: leaseWith(nil, nil, "5"), observedAt: seen, gone: true}, false, 0, actWait, 15 * time.Second},
		{"deleted, last state unknown, short claim seen: wait at least a lease duration", leaseView{lease: leaseWith(ptr.To("b"), ptr.To[int32](5), "5"), observedAt: seen, gone: true}, false, 6 * time.Second, actWait, 15 * time.Second},
		{"deleted, last state known, short claim: its own duration", leaseView{lease: leaseWith(ptr.To("b"), ptr.To[int32](5), "5"), observedAt: seen, gone: true, goneFinal: true}, false, 6 * time.Second, actCreate, 0},
		{"our own write deleted: create at once", leaseView{lease: leaseWith(ptr.To("a"), ptr.To[int32](15), "5"), observedAt: seen, gone: true, goneOurs: true, ownVersion: "5"}, false, 0, actCreate, 0},
		{"deleted, named as successor: still wait out the claim", leaseView{lease: preferring(leaseWith(nil, ptr.To[int32](15), "5"), "a"), observedAt: seen, gone: true}, false, 0, actWait, 15 * time.Second},
		{"released to us: acquire now", leaseView{lease: preferring(leaseWith(nil, ptr.To[int32](15), "5"), "a"), observedAt: seen}, false, 0, actAcquire, 0},
		{"released to another: defer one duration", leaseView{lease: preferring(leaseWith(nil, ptr.To[int32](15), "5"), "b"), observedAt: seen}, false, 14 * time.Second, actWait, 15 * time.Second},
		{"released to another, deferral over: acquire", leaseView{lease: preferring(leaseWith(nil, ptr.To[int32](15), "5"), "b"), observedAt: seen}, false, 15 * time.Second, actAcquire, 0},
		{"released to another with its longer duration: defer that long", leaseView{lease: preferring(leaseWith(nil, ptr.To[int32](40), "5"), "b"), observedAt: seen}, false, 20 * time.Second, actWait, 40 * time.Second},
		{"released to anyone (*): acquire now", leaseView{lease: preferring(leaseWith(nil, ptr.To[int32](15), "5"), "*"), observedAt: seen}, false, 0, actAcquire, 0},
		{"released to another via spec.preferredHolder: defer", leaseView{lease: specPreferring(leaseWith(nil, ptr.To[int32](15), "5"), "b"), observedAt: seen}, false, 0, actWait, 15 * time.Second},
		{"held, preference for us: the holder's claim still counts", leaseView{lease: preferring(leaseWith(ptr.To("b"), ptr.To[int32](15), "5"), "a"), observedAt: seen}, false, 0, actWait, 15 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			now := seen.Add(tc.now)
			act, at := decideCampaign(tc.view, "a", tc.foreignSelf, now, ld)
			if act != tc.act {
				t.Fatalf("action = %v, want %v", act, tc.act)
			}
			if act == actWait && !at.Equal(seen.Add(tc.at)) {
				t.Fatalf("wait until %v, want %v", at.Sub(seen), tc.at)
			}
		})
	}
}

func TestNewerVersion(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want bool
	}{
		{"10", "9", true}, {"9", "10", false}, {"10", "10", false},
		{"1", "", true}, {"", "", false},
		{"opaque-b", "opaque-a", true}, {"x", "x", false},
	} {
		if got := leaserecord.NewerVersion(tc.a, tc.b); got != tc.want {
			t.Errorf("leaserecord.NewerVersion(%q, %q) = %v, want %v", tc.a, tc.b, got, tc.want)
		}
	}
}

func TestNextTransitionSaturates(t *testing.T) {
	for _, tc := range []struct {
		in   *int32
		want int32
	}{
		{nil, 1}, {ptr.To[int32](-7), 1}, {ptr.To[int32](4), 5}, {ptr.To[int32](math.MaxInt32), math.MaxInt32},
	} {
		if got := nextTransition(tc.in); got != tc.want {
			t.Errorf("nextTransition(%v) = %d, want %d", tc.in, got, tc.want)
		}
	}
}

func TestLeaderValid(t *testing.T) {
	rd := 10 * time.Second
	at := func(d time.Duration) instant { return instant{at: t0.Add(d), boot: -1} }
	if leaderValid(instant{}, at(0), rd) {
		t.Error("valid with no renewal at all")
	}
	if !leaderValid(at(0), at(rd-1), rd) {
		t.Error("invalid 1ns before the deadline")
	}
	if leaderValid(at(0), at(rd), rd) {
		t.Error("valid at the deadline")
	}
	// A suspend: the clock stood still while boot time advanced past the
	// deadline. The term is over.
	sent := instant{at: t0, boot: time.Hour}
	resumed := instant{at: t0.Add(time.Second), boot: time.Hour + rd}
	if leaderValid(sent, resumed, rd) {
		t.Error("valid after a suspend longer than the renew deadline (boot time ignored)")
	}
	if !leaderValid(sent, instant{at: t0.Add(time.Second), boot: time.Hour + time.Second}, rd) {
		t.Error("invalid without a suspend")
	}
	// Boot time unknown on one side: the clock alone decides.
	if !leaderValid(instant{at: t0, boot: -1}, resumed, rd) {
		t.Error("invalid though boot time is unknown at the send and the clock is within the deadline")
	}
}

func preferring(l *coordinationv1.Lease, to string) *coordinationv1.Lease {
	l.Annotations = map[string]string{PreferredHolderAnnotation: to}
	return l
}

func specPreferring(l *coordinationv1.Lease, to string) *coordinationv1.Lease {
	l.Spec.PreferredHolder = ptr.To(to)
	return l
}

// Versions of Leases from a server without resourceVersions are named by
// their record: any field an election writes makes a new version, and
// nothing else does.
func TestVersionOfVersionlessLeases(t *testing.T) {
	base := func() *coordinationv1.Lease {
		at := metav1.NewMicroTime(t0)
		return &coordinationv1.Lease{Spec: coordinationv1.LeaseSpec{
			HolderIdentity: ptr.To("a"), LeaseDurationSeconds: ptr.To[int32](15),
			AcquireTime: &at, RenewTime: &at, LeaseTransitions: ptr.To[int32](2),
		}}
	}
	for _, tc := range []struct {
		name   string
		change func(*coordinationv1.Lease)
		newer  bool
	}{
		{"same record", func(*coordinationv1.Lease) {}, false},
		{"a label only", func(l *coordinationv1.Lease) { l.Labels = map[string]string{"x": "y"} }, false},
		{"renewTime", func(l *coordinationv1.Lease) {
			r := metav1.NewMicroTime(t0.Add(time.Microsecond))
			l.Spec.RenewTime = &r
		}, true},
		{"acquireTime", func(l *coordinationv1.Lease) { r := metav1.NewMicroTime(t0.Add(time.Second)); l.Spec.AcquireTime = &r }, true},
		{"holder", func(l *coordinationv1.Lease) { l.Spec.HolderIdentity = ptr.To("b") }, true},
		{"holder cleared", func(l *coordinationv1.Lease) { l.Spec.HolderIdentity = nil }, true},
		{"transitions", func(l *coordinationv1.Lease) { l.Spec.LeaseTransitions = ptr.To[int32](3) }, true},
		{"duration", func(l *coordinationv1.Lease) { l.Spec.LeaseDurationSeconds = ptr.To[int32](16) }, true},
		{"spec.preferredHolder", func(l *coordinationv1.Lease) { l.Spec.PreferredHolder = ptr.To("b") }, true},
		{"preferred-holder annotation", func(l *coordinationv1.Lease) { preferring(l, "b") }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := base(), base()
			tc.change(b)
			if got := newerLease(b, a); got != tc.newer {
				t.Fatalf("newerLease = %v, want %v (%s vs %s)", got, tc.newer, versionOf(b), versionOf(a))
			}
		})
	}
	// With resourceVersions, they alone decide.
	a, b := base(), base()
	a.ResourceVersion, b.ResourceVersion = "10", "9"
	b.Spec.HolderIdentity = ptr.To("b")
	if newerLease(b, a) || !newerLease(a, b) {
		t.Fatal("resourceVersions must order Leases that carry them")
	}
}

// spec.preferredHolder is written only where kube-apiserver keeps it: on a
// Lease with a strategy, and not after an answer came back without it.
func TestWritesSpecPreference(t *testing.T) {
	withStrategy := func(s string) *coordinationv1.Lease {
		l := &coordinationv1.Lease{}
		if s != "-" {
			l.Spec.Strategy = ptr.To(coordinationv1.CoordinatedLeaseStrategy(s))
		}
		return l
	}
	for _, tc := range []struct {
		name      string
		lease     *coordinationv1.Lease
		successor string
		dropped   bool
		want      bool
	}{
		{"strategy, named successor", withStrategy(string(coordinationv1.OldestEmulationVersion)), "b", false, true},
		{"third-party strategy", withStrategy("example.com/mine"), "b", false, true},
		{"no strategy: 422 with the gate on", withStrategy("-"), "b", false, false},
		{"empty strategy", withStrategy(""), "b", false, false},
		{"anyone", withStrategy(string(coordinationv1.OldestEmulationVersion)), "", false, false},
		{"the server dropped it before", withStrategy(string(coordinationv1.OldestEmulationVersion)), "b", true, false},
		{"no lease", nil, "b", false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := writesSpecPreference(tc.lease, tc.successor, tc.dropped); got != tc.want {
				t.Fatalf("writesSpecPreference = %v, want %v", got, tc.want)
			}
		})
	}
	if !specPreferenceDropped(&coordinationv1.Lease{}, "b") || !specPreferenceDropped(specPreferring(&coordinationv1.Lease{}, "c"), "b") ||
		specPreferenceDropped(specPreferring(&coordinationv1.Lease{}, "b"), "b") {
		t.Fatal("specPreferenceDropped misreads the answer")
	}
}
