// Package leasehold elects one leader among the replicas of a controller
// through a coordination.k8s.io/v1 Lease, and runs the leader's work only
// while that replica holds the Lease.
//
// # Safety: the old leader stops before a new one starts
//
// Only the changes of the Lease are trusted, never the times written in it:
// those come from other clocks. Each candidate notes, on its own clock, when
// it first saw each resourceVersion of the Lease. It may take over a held
// Lease only after its clock has seen no change for the holder's
// leaseDurationSeconds (L), and only with a write conditioned on the
// resourceVersion it saw: if anyone wrote in between, the API server
// answers 409 Conflict and the candidate re-reads instead of overwriting.
//
// The leader measures its renew deadline (D) from the moment it *sent* its
// last successful renewal, which is no later than the moment the server
// stored it, which is no later than the moment any follower saw it. When
// D has passed without a new success, it cancels the work's context. A
// follower starts no earlier than L after it saw that renewal. So, on
// clocks that run at the same rate, the old leader's work has
//
//	margin = L - D - RetryPeriod
//
// to return after its context is cancelled before anyone can start; the
// RetryPeriod is slack for a follower that saw the renewal late. New
// rejects configurations without a positive margin (client-go accepts
// 11s/10s/2s, whose margin is negative). With the defaults, 15s/10s/2s, the
// margin is 3s.
//
// Clock rates may differ. With the leader's clock running slow by a factor
// and a follower's fast by another, safety holds while the ratio of the
// fastest to the slowest clock rate stays below
//
//	L / (D + RetryPeriod)
//
// which is 1.25 for the defaults: 25% of rate difference, far more than
// any working NTP setup drifts. Skew of absolute time (clocks set to
// different times) does not matter at all.
//
// The guarantee has one hole no lease can close: a process that is paused
// (a debugger breakpoint, a long GC or a frozen VM) cannot cancel its own
// work while paused. On resume, the elector checks its clock before
// anything else and cancels the work, but code already running in the
// paused goroutine continues until it next looks at its context. Keep the
// work in short steps that check ctx, or fence writes to the outside world
// (for example with the Lease's resourceVersion or a term number), if
// overlap would do harm.
//
// # Callback contract
//
//   - OnStartedLeading(ctx) runs in its own goroutine at the start of each
//     term. ctx is cancelled the moment the term ends.
//   - OnStoppedLeading is called only in a process that called
//     OnStartedLeading, exactly once per term, after OnStartedLeading has
//     returned, or after the safety margin ran out when the lease was lost.
//   - OnNewLeader is called for each change of the observed holder, the
//     first one included, one call at a time and in order, never with a
//     stale identity after a newer one. A release (empty holder) is not
//     reported.
//   - When Run's ctx is cancelled while leading, the elector cancels the
//     work and keeps renewing until OnStartedLeading returns; only then does
//     it release the Lease (with ReleaseOnCancel) and call OnStoppedLeading.
//   - When the lease is lost, the work is cancelled at once and the Lease
//     is never released: it may already be someone else's.
//   - If OnStartedLeading panics or returns while the elector leads, the
//     panic is recovered, the term ends, the Lease is released (nothing
//     guarded by it runs any more), and Run returns an error saying why,
//     or campaigns again with Rejoin.
//
// # A term, and its fencing token
//
// Each term carries a Term, from TermFromContext(ctx) in OnStartedLeading
// or Elector.Term: the Lease, the holder, the Lease's UID and
// Transitions, the leaseTransitions value the winning write set, which
// strictly increases from one term to the next whichever leasehold
// process wins. Stamp writes to the outside world with it, so that a
// store (or, with the fence package, the API server itself) can refuse
// the writes of a deposed leader that a pause kept running.
//
// # Stepping down is bounded
//
// When Run's ctx is cancelled (or a Yield asks for a handoff) the elector
// keeps renewing until OnStartedLeading returns, for at most
// StepDownTimeout. If the work ignores its ctx that long, the elector
// stops renewing without releasing and Run returns ErrStepDownTimeout:
// the process must exit, and the Lease expires LeaseDuration after the
// last renewal, by when the work is gone with the process.
//
// # Handing over on purpose
//
// Elector.Yield, or any writer setting the annotation
// leasehold.dev/preferred-holder on the Lease, makes the leader stop its
// work, then release the Lease naming the successor. The successor takes
// it at once; everyone else defers to it for one lease duration. The
// release is the same conditional write as any release, so a handoff can
// never blank another holder's Lease.
//
// # Followers watch, they do not poll
//
// Every candidate keeps one watch open on its Lease (a field selector on
// metadata.name), resumed from the last resourceVersion it saw. A release
// seen on the watch is acted on at once; an expiry is acted on when a
// local timer fires, at the exact instant the claim runs out. A follower
// makes no other requests. The leader renews with one Update from its
// cached copy, without a GET. If RBAC forbids watch, the elector polls
// with a GET every RetryPeriod instead.
package leasehold
