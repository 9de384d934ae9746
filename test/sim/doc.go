// Package sim is a deterministic simulation of leasehold elections: N
// electors campaign for one Lease on one in-memory API server
// (leaseholdtest.Server), each with its own client, inside a
// testing/synctest bubble, so that hours of virtual time pass in seconds.
// A seed draws the world (timings, candidate settings) and a schedule of
// operations and faults: candidates started, cancelled and crashed,
// yields, hand edits and deletions of the Lease, refused, slow, stalled
// and partitioned requests, writes whose answers are lost, closed,
// expired, lagging and unavailable watches, watches ended as soon as
// they open, works that ignore their context; in half the plans the
// candidates' clocks are set apart by up to four lease durations. In two
// plans in three (drawn from a stream of their own, so that the rest of
// a seed's schedule is unchanged) processes are paused (pause.go): a
// paused candidate's clock stands still and its timers wait, its
// requests are not sent and their answers not delivered, its watch
// events are held, its work does not move, and a cancel or yield meant
// for it waits; at the resumption its clock jumps to true time and what
// fell due fires. One pause in three, outside coordinated plans, is a
// suspend: the process's monotonic clock does not count it, its time
// since boot (leasehold.BootClock) does.
//
// Invariants are checked as the world runs, on virtual time:
//
//   - overlap: at most one work (OnStartedLeading, from its call until it
//     returns) at any instant, unless the older one was cancelled more than
//     the safety margin ago (the library's contract then lets another
//     leader start), or its process was paused at or after its renew
//     deadline (the hole of the package doc: a paused process cannot
//     cancel its work, nor can that work return; counted apart);
//   - no-leader: LeaderBound (2 x LeaseDuration + RetryPeriod) after the
//     last disturbance, with no fault active and a candidate running,
//     somebody works, and no work ends without a disturbance;
//   - request-loop: at most 64 requests of one incarnation at one virtual
//     instant; request-budget: at most 8 x (1m / RetryPeriod) + 60 in a
//     virtual minute;
//   - release-retry: a release refused with 400, 403, 405 or 422 is not
//     sent again; release: no release is sent after OnStoppedLeading (the
//     Lease is released first), nor again from a version it met 409 on
//     without a read in between;
//   - yield: every Yield answered within YieldBound; handoff: a Yield to a
//     named running successor in a quiet world makes it lead within
//     2 x RetryPeriod;
//   - run-return: Run returns within StepDownTimeout (plus one request in
//     flight) of its ctx's cancellation, not counting its pauses (so for
//     the yield and callback bounds); run-ended: Run returns nil only
//     after its ctx was cancelled, and with Rejoin only for a step-down
//     timeout or an identity conflict (a yield or a lost term keeps it
//     campaigning), and never with an identity conflict when every
//     incarnation has an identity of its own;
//   - deadline: a work's ctx is cancelled no later than the send time of
//     the last write naming its process holder whose success the process
//     was told of, plus RenewDeadline on its monotonic clock (a suspend
//     puts it off), or, if its process was paused then, at its
//     resumption; late-renewal: no renewal sent past that deadline (in
//     true time) lands while the work runs uncancelled (one that fails is
//     counted apart: renew retries after a re-read whose answer a pause
//     held, with no time left, an open finding); check-stalled: at a
//     leader's resumption, before it acts, Check(tol) fails for tol below
//     the time since its last successful write less RenewDeadline, and
//     reports no ErrRenewStalled at or above it;
//   - callback: OnStoppedLeading once per term, after the work returned
//     (or after the safety margin), and, for a term lost with no step-down
//     asked for, no later than the safety margin after the work's ctx was
//     cancelled; check: while a work outlives its term (OnStoppedLeading
//     called before it returned), Check fails;
//   - leaked-goroutines: nothing left when the world ends (synctest);
//     no-virtual-progress: virtual time never stands still for a minute of
//     real time.
//
// A violation carries a signature that tells failures of one kind apart
// (a request loop: the verbs and answers it repeats; an overlap: the new
// leader's last requests). On a violation, Report writes the history
// (requests and their answers, watch events, works, the electors' log,
// the operations) around it, and Shrink drops faults to find a shorter
// schedule that still fails the same way.
// The shard world (NewShardPlan, go run ./cmd/sim -world shard) runs M
// shard.Members of one group, K shards drawn from {1, 4, 8, 16}, each
// incarnation with its own client and identity, under starts, cancels
// (ReleaseOnCancel drawn per member), crashes with restarts, hand
// deletions of the assignment Lease and of member Leases, refusals,
// latency, stalls, partitions, lost answers, closed, expired, dropped,
// lagging and unavailable watches, compaction, clocks set apart by up to
// four lease durations (half the plans), and works that ignore their ctx
// until a fault heals. Its
// invariants: overlap, at most one running work per shard (from
// OnShardStarted's call until it returns), excusing only a work whose
// process crashed (it dies with it) and one cancelled more than the
// safety margin ago (shard/doc.go: a work that outlives the margin keeps
// its term running, and the election reports it); shard-idle,
// ShardLiveBound (2 x LeaseDuration + 2 x RetryPeriod + the margin)
// after the last disturbance, with no fault active and a member
// running, every shard runs somewhere; request-loop and request-budget
// as above; run-return, Run returns within StepDownTimeout plus two
// requests of its cancellation or of its last work's return, whichever
// is later (Run returns only after every work returned); run-ended;
// leaked-goroutines. As shard/doc.go requires, the assignment Lease is
// deleted by hand only while every running member's group watch is open
// and no fault has touched requests for a LeaseDuration; otherwise the
// deletion is skipped and logged.
//
// In one elector plan in four (drawn from a stream of its own, so plain
// plans are unchanged; -coordinated forces it on or off) the candidates
// run coordinated election (KEP-4355, leasehold.NewCoordinated): each
// registers a LeaseCandidate on the world's own LeaseCandidate API
// (leaseholdtest serves Leases only), and an election controller plays
// kube-apiserver's (coordinated_world.go): when the Lease is absent,
// released or expired by its own clock, it pings the candidates, waits
// up to CtrlWait (5s, or less) for their answers, at most one round per
// 5s, and writes the Lease to the best one that answered (oldest
// emulation, then binary version, then registration) with no acquireTime
// and leaseDurationSeconds 5; on a held Lease it names a better
// candidate in spec.preferredHolder (a disturbance). Its clock is its
// own; the candidates' are within LeaseDuration/2 of it either way. The
// no-leader bound is then CoordinatedLeaderBound, LeaderBound +
// LeaseDuration/2 + 2 x 5s; a yield's handoff is not checked (the
// controller picks the successor); Run's bound allows 1ms more. Two
// findings of the library, once counted apart, are fixed and are
// violations in every coordinated plan (Plan.Strict): an identity
// conflict after the controller wrote the Lease naming the identity
// (also when it marks a better candidate on an assignment not taken up,
// drawn in one coordinated plan in two), and a Run that returned past
// StepDownTimeout because the work waited for the LeaseCandidate's
// withdrawal. A hung work's late return, which in coordinated election
// leaves nobody leading until it returns, is strict too: 4,000 seeds
// showed no such gap. The
// overlap check excuses a Lease never seen only for a term won on another
// object than the other work's.
//
// Interleavings of goroutines at one virtual instant, and the library's
// own jitter, are not drawn from the seed: a replay runs the same
// schedule at the same virtual instants, and usually, not always, the
// same interleaving.
package sim
