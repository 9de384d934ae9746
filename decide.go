package leasehold

import (
	"strconv"
	"strings"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/leasehold/leasehold/internal/leaserecord"
)

// This file holds the election's decisions as pure functions of what this
// process has seen and its own clock. They do no I/O and keep no state, so
// unit tests (and the fuzzer) call them directly.

// leaseView is what this process knows of the Lease.
type leaseView struct {
	// lease is the newest version seen. After a deletion it is kept, so
	// that its holder's claim still runs out on time.
	lease *coordinationv1.Lease
	// gone is set when the Lease was seen deleted after lease.
	gone bool
	// goneFinal is set, with gone, when lease is the deleted object's
	// last state (a watch showed the deletion of a version this process
	// had seen, or the DELETE event carried it). Unset, an unseen holder
	// may have written after lease before the deletion.
	goneFinal bool
	// goneOurs is set, with gone, when the deleted version was this
	// process's own write (a renewal or release conditioned on it got 404
	// within the renew deadline): nobody else held it, so once this
	// process's work has stopped the Lease is free at once.
	goneOurs bool
	// observedAt is the local time at which lease's version was first
	// seen, or, for a deletion whose final state is unknown, when this
	// process learned of the deletion. Expiry is measured from it, never
	// from timestamps in the Lease, which another clock wrote.
	observedAt time.Time
	// ownVersion is the version (see versionOf) of this process's last
	// successful write of the Lease in the current term, "" if none.
	ownVersion string
}

// ours reports whether the newest Lease seen is this process's own last
// write of the current term.
func (v leaseView) ours() bool {
	return v.lease != nil && v.ownVersion != "" && versionOf(v.lease) == v.ownVersion
}

// versionOf names one version of a Lease: its resourceVersion, or, on a
// server that returns none (client-go's fake clientsets), its record: the
// fields an election writes. Two versions are the same write if and only
// if their names are equal.
func versionOf(lease *coordinationv1.Lease) string {
	if lease == nil {
		return ""
	}
	if lease.ResourceVersion != "" {
		return lease.ResourceVersion
	}
	return "record:" + recordOf(lease)
}

// recordOf renders the fields of a Lease that an election writes, for
// servers that return no resourceVersion: holder, acquire and renew times,
// transitions, duration, preferred holder and strategy, and the
// preferred-holder annotation.
func recordOf(lease *coordinationv1.Lease) string {
	s := lease.Spec
	str := func(p *string) string {
		if p == nil {
			return "-"
		}
		return strconv.Quote(*p)
	}
	num := func(p *int32) string {
		if p == nil {
			return "-"
		}
		return strconv.Itoa(int(*p))
	}
	when := func(t *metav1.MicroTime) string {
		if t == nil {
			return "-"
		}
		return t.UTC().Format(time.RFC3339Nano)
	}
	strategy := "-"
	if s.Strategy != nil {
		strategy = string(*s.Strategy)
	}
	return strings.Join([]string{
		str(s.HolderIdentity), when(s.AcquireTime), when(s.RenewTime),
		num(s.LeaseTransitions), num(s.LeaseDurationSeconds),
		str(s.PreferredHolder), strategy, strconv.Quote(lease.Annotations[PreferredHolderAnnotation]),
	}, "|")
}

// newerLease reports whether Lease a is a newer version than b. With
// resourceVersions on both, they are compared; on a server that returns
// none, any difference in the record counts as newer: such a server offers
// no ordering, and its watch delivers changes in order.
func newerLease(a, b *coordinationv1.Lease) bool {
	if a.ResourceVersion == "" || b.ResourceVersion == "" {
		return versionOf(a) != versionOf(b)
	}
	return leaserecord.NewerVersion(a.ResourceVersion, b.ResourceVersion)
}

// campaignAction is what a candidate should do next.
type campaignAction int

const (
	// actCreate: create the Lease; it does not exist and no live claim
	// on it is known.
	actCreate campaignAction = iota
	// actAcquire: update the Lease, conditioned on the version seen, to
	// name this process as holder.
	actAcquire
	// actWait: the holder's claim is live; wait until the returned
	// instant (or a change) and decide again.
	actWait
)

func (a campaignAction) String() string {
	switch a {
	case actCreate:
		return "create"
	case actAcquire:
		return "acquire"
	default:
		return "wait"
	}
}

// decideCampaign decides a candidate's next step from its view of the
// Lease. self is this process's identity, foreignSelf says the Lease names
// self but this process did not write it (treated as another holder), and
// fallback is this elector's LeaseDuration.
//
// The rules, in order:
//   - nothing seen yet: create;
//   - the Lease is gone (deleted): create at once if the deleted version
//     was this process's own write (its work has stopped: a campaign runs
//     only then) or was released; otherwise wait until the last claim
//     ran out, counted from observedAt: when this process first saw the
//     deleted version, or, when the deleted object's last state is
//     unknown, when it learned of the deletion, for at least fallback
//     (a holder it never saw may have written last);
//   - no holder: acquire now (the Lease was released), unless the
//     release named another candidate as successor: then wait one claim
//     duration after it was seen, for that candidate to take it;
//   - held under self by this process's own last write: acquire now
//     (the conditional update proves nobody else took it since);
//   - otherwise the claim expires claimDuration after observedAt, by the
//     local clock: wait until then, then create or acquire.
//
// Every write it leads to is conditional (create fails if the Lease
// exists; update fails if its version moved), so a stale view costs a
// conflict, never a second leader.
func decideCampaign(v leaseView, self string, foreignSelf bool, now time.Time, fallback time.Duration) (campaignAction, time.Time) {
	if v.lease == nil {
		return actCreate, now
	}
	holder := leaserecord.Holder(v.lease)
	if v.gone {
		if v.goneOurs || (v.goneFinal && holder == "") {
			return actCreate, now
		}
		claim := leaserecord.ClaimDuration(v.lease, fallback)
		if !v.goneFinal {
			claim = max(claim, fallback)
		}
		if expiry := v.observedAt.Add(claim); now.Before(expiry) {
			return actWait, expiry
		}
		return actCreate, now
	}
	if holder == "" {
		// A release that names a successor: the successor takes it at
		// once; everyone else defers to it for one claim duration.
		if to, ok := preferredHolder(v.lease); ok && to != "" && to != self {
			if deferUntil := v.observedAt.Add(leaserecord.ClaimDuration(v.lease, fallback)); now.Before(deferUntil) {
				return actWait, deferUntil
			}
		}
		return actAcquire, now
	}
	if holder == self && !foreignSelf && v.ours() {
		return actAcquire, now
	}
	expiry := v.observedAt.Add(leaserecord.ClaimDuration(v.lease, fallback))
	if !now.Before(expiry) {
		return actAcquire, now
	}
	return actWait, expiry
}

// leaderValid reports whether a leader whose last successful renewal was
// sent at lastRenewSent still leads at now: strictly within RenewDeadline,
// by the clock and by the time since boot (a suspend counts; instant.go).
func leaderValid(lastRenewSent, now instant, renewDeadline time.Duration) bool {
	return !lastRenewSent.IsZero() && deadlineLeft(lastRenewSent, now, renewDeadline) > 0
}

// deadlineLeft is how much of renewDeadline is left at now for a term
// whose last successful write was sent at lastSent (the rule of
// leaderValid, as a duration): every request and wait of a leader is
// bounded by it.
func deadlineLeft(lastSent, now instant, renewDeadline time.Duration) time.Duration {
	return renewDeadline - elapsed(lastSent, now)
}

// leaderTimeLeft is deadlineLeft, capped, during a step-down, by its
// bound by (zero when not stepping down): what a leader's re-read or
// retry may still take, so that the term ends on time either way.
func leaderTimeLeft(lastSent, now instant, renewDeadline time.Duration, by time.Time) time.Duration {
	left := deadlineLeft(lastSent, now, renewDeadline)
	if !by.IsZero() {
		left = min(left, by.Sub(now.at))
	}
	return left
}

// writesSpecPreference reports whether a release naming successor writes
// it in spec.preferredHolder as well as in PreferredHolderAnnotation.
// kube-apiserver accepts the field only on a Lease that has a strategy:
// with the CoordinatedLeaderElection gate on, validation refuses a
// preferredHolder without spec.strategy (422, which would fail the
// release); with the gate off (the default) the server drops strategy from
// every write, and preferredHolder too unless the stored Lease already has
// one. So the field is written only on a Lease that carries a strategy,
// and never again once a release's answer came back without it (dropped).
func writesSpecPreference(lease *coordinationv1.Lease, successor string, dropped bool) bool {
	return successor != "" && !dropped && lease != nil &&
		lease.Spec.Strategy != nil && *lease.Spec.Strategy != ""
}

// specPreferenceDropped reports whether the answer to a release that wrote
// successor in spec.preferredHolder came back without it: the server
// drops the field.
func specPreferenceDropped(answer *coordinationv1.Lease, successor string) bool {
	p := answer.Spec.PreferredHolder
	return p == nil || *p != successor
}
