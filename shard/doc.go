// Package shard spreads the work of a controller over all its replicas:
// the work is cut into K shards, and every live member of a group runs a
// fair share of them, with, per shard, the contract of a leasehold
// election: never two members running one shard's work at once, and a
// shard's work returned before anyone else starts it. It costs about one
// election per replica, whatever K.
//
//	m, err := shard.New(shard.Config{
//		Namespace: "my-system", Group: "my-controller", Identity: id,
//		Client: clientset.CoordinationV1(), Shards: 32, ReleaseOnCancel: true,
//		OnShardStarted: func(ctx context.Context, i int) { runShard(ctx, i) },
//	})
//	err = m.Run(ctx)
//
// Of and Selector map objects to shards the way KEP-5866's server-side
// sharded list and watch does (shard i is the i-th of K equal ranges of
// the FNV-1a-64 hash of the object's UID or namespace), so a shard's
// informer can ask the API server for that shard's objects only.
//
// # The Leases
//
// A group named G in a namespace has:
//
//   - one member Lease per process, MemberLeaseName(G, identity), which
//     the process holds and renews through a leasehold election it always
//     wins (it is the only candidate). A membership term is a term of
//     that election; it carries the label LabelGroup=G while held.
//   - one assignment Lease named G, labelled LabelGroup=G, whose
//     annotation AnnotationAssignment records, per shard, its owner (the
//     member that may run it, or none) and its target (the member that
//     should run it), and per member the epoch of its claims. Members
//     write it only with compare-and-swap (an update conditioned on the
//     resourceVersion they read), and only when something changes, never
//     per tick.
//
// Each member follows all of them through one watch with the label
// selector LabelGroup=G (where the server refuses that watch, by listing
// them every RetryPeriod instead). Beyond its own renewals (and those
// lists) it makes requests only when the assignment must change.
//
// # The handoff
//
// A member's epoch in a term is the resourceVersion of its own member
// Lease, read (a quorum read) at the start of the term while it names the
// member as holder. No other process writes that Lease with this holder,
// so the epoch is no older than the write that won the term.
//
// Every step below is one compare-and-swap write of the assignment, by one
// member, from the newest version it has seen:
//
//  1. Targets. The proposer, the live member with the smallest identity
//     in its own view, rebalances the targets over the live members with a
//     deterministic, stable function (see below). A joining member may
//     write its own share, and a leaving one moves its own targets away
//     and marks itself leaving, so that it is not targeted again.
//  2. Acknowledgement. An owner that sees a shard targeted elsewhere (or
//     that is leaving) cancels the shard's work, waits for it to return
//     and for OnShardStopped, then clears the owner. It clears all such
//     shards that have returned in one write. A member in a new term
//     clears, in its first write, the shards it owned in an earlier term
//     that are no longer its targets: no work of an earlier term runs
//     (a term starts only once the previous one's work, every shard of
//     it, has returned).
//  3. Claim. A target that sees no owner records itself as owner, with
//     its current epoch, and starts the work only after that write
//     succeeded.
//  4. Takeover. A target may replace an owner o that never acknowledged,
//     only if o's claim is void: the epoch recorded for o is no later
//     than a version v of o's member Lease such that
//     (a) the Lease has been absent (deleted, or released: a member
//     removes the label when it releases) since v, for o's
//     leaseDurationSeconds by the claimant's local clock; or
//     (b) v holds no holder because a member fenced it; or
//     (c) the claimant saw v unchanged for o's leaseDurationSeconds by
//     its local clock (the election's expiry rule) and then fenced
//     it: an update conditioned on v that clears the holder. Only then
//     does it write the claim.
//
// A member runs a shard only while its term is live (before the renew
// deadline) and its newest view of the assignment names it as owner and
// target with its current epoch. Seeing anything else, for example the
// owner changed without its acknowledgement after a pause, stops the
// shard's work at once. When a term ends, every shard's context, derived
// from the term's, is cancelled at that instant: a member whose
// membership lapses cancels every shard at its renew deadline.
//
// # Why one shard never runs in two members
//
// Only one object can be compared-and-swapped at a time, so the owner
// field carries the safety: at any version it names one member, and only
// these writes change it: the owner itself clearing it after its work
// returned (step 2), a claim of an empty owner (3), and a takeover (4).
// Take a member c that starts shard i after its write W, and a run of i
// by another member o.
//
// If o's run began under a claim that o later acknowledged, o's work had
// returned before o wrote the acknowledgement, which precedes W in the
// assignment's history: o's run ended before c's began.
//
// Otherwise o still owned i in the version W replaced, and W is a
// takeover. o runs i only under the epoch of its current term, and o
// records each term's epoch in that term, so the epoch e that W's base
// holds for o is that of the last term τ in which o wrote the assignment;
// runs of o's earlier terms returned before τ began. e <= v, and τ's
// winning write is no later than e, so τ began no later than v. If v was
// written after τ ended, τ's runs have all returned. If τ wrote v, then:
//
//   - in case (c), the fence is conditioned on v and succeeded, so τ
//     renewed nothing after v; a renewal in flight fails on the fence
//     instead of extending the term. v was sent before the claimant saw
//     it, and τ ends RenewDeadline after that send, by o's clock. The
//     claimant fenced LeaseDuration after seeing v, by its clock. This is
//     exactly the election's argument: o's shards were cancelled, and
//     had LeaseDuration - RenewDeadline - RetryPeriod (the safety
//     margin) to return, before c could start. Case (b) is the same
//     with another member as fencer.
//   - in case (a), every write of τ precedes v: after a deletion o's
//     renewals fail; a release ends τ after its work returned; another
//     process's edit conflicts with o's next renewal and ends τ. The
//     claimant saw the absence no earlier than v and waited
//     LeaseDuration: the same margin again.
//
// Hence the epochs: without them, a member that fenced o's Lease, whose
// view of it lags, could take a shard o re-claimed in a new term; with
// them, such a claim carries an epoch later than the fenced version and
// is not taken.
//
// A member Lease's absence is timed from when the claimant first saw it
// absent: the watch's event, or, after the watch was down, the first list
// that shows it absent. An absence seen before counts from then only if
// the assignment holds no claim of that member newer than it; otherwise
// the member came back and went again unseen, and its new absence counts
// from that list.
//
// # When the assignment Lease is deleted
//
// A deleted assignment Lease is gone, and with it the record of who owns
// what; nothing is resurrected from it. A member learns of the deletion
// from its watch, from a list without the Lease, from an update that
// finds it gone (404), or from a Lease of that name with another UID. It
// stops every shard at once and stays in the group (Run goes on). The
// other owners learn of it too, and stop theirs; their work has had
// LeaseDuration to return once that long has passed since this member
// learned of it. Until then this member creates no assignment, starts no
// shard, and hands on none it owns, with one exception: a former owner,
// for the shards it owned in the deleted assignment under its current
// term's epoch, once their work has returned here (nobody else can run
// them). It may create the assignment at once to restart those, recording
// itself as owner of every other shard, which it hands on (acknowledges)
// only when its wait is over, so that nobody starts them sooner. A member
// that sees no other member Lease held, or gone for less than its
// duration, waits for nothing: nobody else can run a shard. A member that
// finds no assignment Lease when it starts, while other members' Leases
// are held, cannot tell a new group from a deleted assignment: it waits
// LeaseDuration before creating one (unless another member creates it
// first).
//
// This relies on every owner learning of the deletion promptly: an owner
// whose watch is down when the Lease is deleted learns of it when it
// lists the group again, and should that take longer than LeaseDuration
// minus the time its work takes to return, its shards could still run
// when others start them. Do not delete the assignment Lease of a running
// group unless its members' watches are healthy.
//
// # API errors
//
// Every request is bounded by a timeout (RenewDeadline/2). Transient
// failures (no answer, timeouts, 5xx, 429) are retried with capped
// exponential backoff and logged once per streak (then once a minute, and
// on recovery). A 404 is news, never retried as such: the Lease is gone.
// A permanent refusal (RBAC's 403, an invalid request, a create in a
// missing namespace) ends Run with ErrRefused, which names the request and
// wraps the server's error. A lost race whose re-read brings nothing newer
// is retried after a backoff; a watch that ends as soon as it opened is
// reopened after one.
//
// Clock assumptions are the election's: rates may differ while the ratio
// of the fastest to the slowest stays below LeaseDuration / (RenewDeadline
// + RetryPeriod); absolute offsets do not matter. The pause caveat too: a
// paused process cannot cancel its own shards while paused (see the
// leasehold package). A shard's work that outlives the margin keeps its
// term's work function running: the election reports it
// (leasehold.ErrWorkOutlivedLease) and the member joins again only after
// it returned.
//
// # Balance and stability
//
// Targets are rebalanced by a pure function of the current targets and
// the live members: members get K/N shards each and K mod N of them one
// more, the extra ones going to those that have most now; over-quota
// members give up their highest-numbered shards, and freed shards go to
// the member furthest below its quota. Once settled, max - min <= 1; from
// a balanced assignment, a leave moves only the leaver's shards and a join
// moves at most ceil(K/(N+1)) shards, all to the joiner.
//
// Liveness only (never safety) uses one hint: a member Lease whose
// renewTime, written by its holder's clock, is more than twice its
// duration old is not targeted, so a new member does not target members
// that left long ago without releasing. Since it reads another clock, it
// applies only to a Lease never seen renewed and not named by the
// assignment: members whose clocks are far apart still agree on who is
// live, and never undo each other's targets.
//
// # Moves
//
//   - Graceful leave (ReleaseOnCancel): the leaver's first write moves its
//     targets away; as each shard's work returns it is acknowledged and
//     claimed: two writes and a watch event, milliseconds. The member
//     Lease is then released and deleted.
//   - Join: the new member's Lease appears in everyone's watch; the
//     proposer (or the joiner) retargets, owners acknowledge as their
//     work returns, the joiner claims: milliseconds plus the time the
//     moved work takes to return.
//   - Crash: the others wait out the member Lease (LeaseDuration after
//     its last renewal was seen), fence it and claim.
//
// # Cost
//
// Steady state: each member renews its own Lease every RetryPeriod (30
// requests a minute at 2s), and keeps two watches open (its Lease's, the
// group's), whatever K; without 'watch', one list of the group per
// RetryPeriod replaces the group's watch. Every assignment change costs a few writes for
// the whole change, plus one GET after a lost race.
//
// # Server-side filtering
//
// Selector(field, K, shards...) is the KEP-5866 shard selector of some
// shards; its String() goes in metav1.ListOptions.ShardSelector, for
// example through an informer factory's TweakListOptions, one informer
// per shard that lives as long as the shard's ctx. Servers without the
// ShardedListAndWatch feature gate ignore the selector and send every
// object: ServerFiltersShards detects this with one list, and then
// Selector(...).Matches filters on the client.
//
// # RBAC
//
// On coordination.k8s.io leases in the namespace: get, list, watch,
// create, update, and delete (to remove a member's released Lease when it
// leaves; without it the Lease stays, unused). Without watch, members list
// the group every RetryPeriod instead: slower handoffs, more requests.
// Without get, list, create or update, Run ends with ErrRefused.
package shard
