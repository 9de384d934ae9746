package main

// mutations is the list make mutate applies, one at a time, to a scratch
// copy. Each Original is an exact snippet of the code (tabs and newlines
// included); it must occur exactly once in File. When the code moves, the
// run reports DOES-NOT-APPLY and fails: update the snippet here.
var mutations = []mutation{
	// The audit's "caught" list (issue 16): they must stay caught.
	{
		Name:  "renew-deadline-from-answer",
		Point: "the leader measures its renew deadline from when it sent its last successful renewal",
		File:  "renew.go",
		Original: `			return sent, nil
		case apierrors.IsNotFound(err):`,
		Mutated: `			return e.now(), nil
		case apierrors.IsNotFound(err):`,
		Tests:    []string{"TestRenewDeadlineFromSendTime"},
		Contract: true,
	},
	{
		Name:  "acquire-time-from-answer",
		Point: "a term counts from the send time of the write that won it",
		File:  "campaign.go",
		Original: `r.acquiredAt = sent
		e.cfg.Metrics.Transition(e.cfg.Name)
`,
		Mutated: `r.acquiredAt = e.now()
		e.cfg.Metrics.Transition(e.cfg.Name)
`,
		Tests:    []string{"TestPauseAfterAcquireLandedStartsNothing"},
		Contract: true,
	},
	{
		Name:  "stopped-before-work-returned",
		Point: "OnStoppedLeading is called after OnStartedLeading has returned",
		File:  "term.go",
		Original: `			t.beginStepDown(nil)
`,
		Mutated: `			t.beginStepDown(nil)
			return t.stepDown(ctx, workResult{}, true)
`,
		Tests:    []string{"TestCancelKeepsRenewingUntilWorkReturnsThenReleases"},
		Contract: true,
	},
	{
		Name:     "expiry-from-renewTime",
		Point:    "expiry is measured on the local clock from when a version was first seen, never from renewTime",
		File:     "decide.go",
		Original: `expiry := v.observedAt.Add(leaserecord.ClaimDuration(v.lease, fallback))`,
		Mutated:  `expiry := v.lease.Spec.RenewTime.Time.Add(leaserecord.ClaimDuration(v.lease, fallback))`,
		Tests:    []string{"TestAcquireWaitsHolderDurationByLocalClock"},
		Contract: true,
	},
	// The audit's "not caught" list, and the tests that asserted nothing.
	{
		Name:  "release-conditioned-on-a-read",
		Point: "the release is conditioned on our own last write: it never blanks another holder",
		File:  "renew.go",
		Original: `		got, err := e.lock.update(rctx, e.lock.released(r.view.lease, now, successor, inSpec))
`,
		Mutated: `		base := r.view.lease
		if cur, gerr := e.lock.get(rctx); gerr == nil && cur != nil {
			base = cur // conditioned on what a GET returned
		}
		got, err := e.lock.update(rctx, e.lock.released(base, now, successor, inSpec))
`,
		Tests:    []string{"TestContractReleaseConditionedOnOwnLastWrite", "TestReleaseNeverBlanksAnotherHolder"},
		Contract: true,
	},
	{
		Name:  "release-retried-after-409",
		Point: "a release that meets 409 is not retried: the Lease changed since our last write",
		File:  "renew.go",
		Original: `case apierrors.IsConflict(err):
			r.log.Info("Did not release the lease`,
		Mutated: `case false:
			r.log.Info("Did not release the lease`,
		Tests:    []string{"TestContractReleaseConditionedOnOwnLastWrite"},
		Contract: true,
	},
	{
		Name:  "lost-grace-longer-than-margin",
		Point: "after a loss, the work gets at most the safety margin",
		File:  "term_end.go",
		Original: `wait, stepDownEnds := e.t.safetyMargin(), false
`,
		Mutated: `wait, stepDownEnds := e.t.safetyMargin() + 2*time.Second, false
`,
		Tests:    []string{"TestContractLostWorkGetsExactlyTheMargin", "TestLostLeaseWorkOutlivesMargin"},
		Contract: true,
	},
	{
		Name:  "lost-grace-shorter-than-margin",
		Point: "after a loss, the work gets the safety margin before OnStoppedLeading",
		File:  "term_end.go",
		Original: `wait, stepDownEnds := e.t.safetyMargin(), false
`,
		Mutated: `wait, stepDownEnds := e.t.safetyMargin() - time.Second, false
`,
		Tests:    []string{"TestContractLostWorkGetsExactlyTheMargin", "TestLostLeaseWorkOutlivesMargin"},
		Contract: true,
	},
	{
		Name:     "check-renew-stalled-disabled",
		Point:    "Check returns ErrRenewStalled when leading without a renewal for RenewDeadline plus the tolerance",
		File:     "health.go",
		Original: `stalled > e.t.renewDeadline+maxTolerableExpiredLease {`,
		Mutated:  `stalled < 0 {`,
		Tests:    []string{"TestContractCheckRenewStalled"},
		Contract: true,
	},
	{
		Name:     "check-renew-stalled-no-tolerance",
		Point:    "Check tolerates maxTolerableExpiredLease past RenewDeadline",
		File:     "health.go",
		Original: `stalled > e.t.renewDeadline+maxTolerableExpiredLease {`,
		Mutated:  `stalled > e.t.renewDeadline {`,
		Tests:    []string{"TestContractCheckRenewStalled"},
		Contract: true,
	},
	{
		Name:     "onnewleader-concurrent",
		Point:    "OnNewLeader is called one call at a time, in order",
		File:     "callbacks.go",
		Original: `callSafely(n.log, "OnNewLeader", func() { n.callback(id) })`,
		Mutated:  `go callSafely(n.log, "OnNewLeader", func() { n.callback(id) })`,
		Tests:    []string{"TestContractOnNewLeaderOneAtATimeInOrder", "TestOnNewLeaderInOrder"},
		Contract: true,
	},
	{
		Name:  "stopped-before-release",
		Point: "the Lease is released (ReleaseOnCancel), then OnStoppedLeading is called",
		File:  "term_end.go",
		Original: `	if t.e.cfg.ReleaseOnCancel || !stepping || t.yield != nil {
		successor := ""
		if t.yield != nil {
			successor = t.yield.to
		}
		released = t.r.release(ctx, t.lastSent, successor, t.stepDownBy())
		if t.yield != nil && apierrors.IsConflict(released) {
			// A concurrent write moved the version: often the very
			// annotation that asked for this handoff, which leaves the
			// Lease ours. Re-read once; if it is still ours, release from
			// the fresh copy, so the successor gets it in milliseconds.
			left := leaderTimeLeft(t.lastSent, t.e.now(), t.e.t.renewDeadline, t.stepDownBy())
			// (With no time left, the Lease expires on its own.)
			if left > 0 && t.r.reread(ctx, min(t.e.t.requestTimeout(), left)) == nil && t.r.stillOurs() == nil {
				if to, ok := preferredSuccessor(t.r.view.lease, t.e.lock.Identity); ok {
					successor = to // the newest request wins
				}
				released = t.r.release(ctx, t.lastSent, successor, t.stepDownBy())
			}
		}
	}
	t.e.setLeading(false, instant{}, nil)
	t.stopped()
`,
		Mutated: `	t.stopped()
	if t.e.cfg.ReleaseOnCancel || !stepping || t.yield != nil {
		successor := ""
		if t.yield != nil {
			successor = t.yield.to
		}
		released = t.r.release(ctx, t.lastSent, successor, t.stepDownBy())
		if t.yield != nil && apierrors.IsConflict(released) {
			// A concurrent write moved the version: often the very
			// annotation that asked for this handoff, which leaves the
			// Lease ours. Re-read once; if it is still ours, release from
			// the fresh copy, so the successor gets it in milliseconds.
			left := leaderTimeLeft(t.lastSent, t.e.now(), t.e.t.renewDeadline, t.stepDownBy())
			// (With no time left, the Lease expires on its own.)
			if left > 0 && t.r.reread(ctx, min(t.e.t.requestTimeout(), left)) == nil && t.r.stillOurs() == nil {
				if to, ok := preferredSuccessor(t.r.view.lease, t.e.lock.Identity); ok {
					successor = to // the newest request wins
				}
				released = t.r.release(ctx, t.lastSent, successor, t.stepDownBy())
			}
		}
	}
	t.e.setLeading(false, instant{}, nil)
`,
		Tests:    []string{"TestContractReleaseBeforeOnStoppedLeading"},
		Contract: true,
	},
	{
		Name:  "lost-create-race-taken-as-win",
		Point: "of candidates racing to create the Lease exactly one wins: AlreadyExists is a lost race",
		File:  "lease_lock.go",
		Original: `	created, err := l.leases().Create(ctx, lease, metav1.CreateOptions{})
`,
		Mutated: `	created, err := l.leases().Create(ctx, lease, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		created, err = lease, nil
	}
`,
		Tests:    []string{"TestContractRaceFiveCandidatesReallyRace", "TestRaceFiveCandidatesOneWinner", "Example_testingRacesWithLeaseholdtest"},
		Contract: true,
	},
	{
		Name:     "any-stamp-is-ours",
		Point:    "a Lease is ours only if it is our own write: a new object naming us is another process",
		File:     "view.go",
		Original: `if !s.IsZero() && s.Equal(t) {`,
		Mutated:  `if !s.IsZero() && !t.IsZero() {`,
		Tests:    []string{"TestLeaseReplacedByNewObjectUnseen", "TestLeaseReplacedByNewObject"},
		Contract: true,
	},
	{
		Name:  "blocking-mailbox",
		Point: "handing an observation to the elector never blocks: no watch is left unread",
		File:  "mailbox.go",
		Original: `func (m mailbox) put(obs observation) {
	for {
`,
		Mutated: `func (m mailbox) put(obs observation) {
	if true {
		m <- obs // blocks while the reader is busy
		return
	}
	for {
`,
		Tests:    []string{"TestPlainFakeWatchersNeverLeftUnread"},
		Contract: true,
	},
	{
		Name:     "spec-preference-without-strategy",
		Point:    "spec.preferredHolder is written only on a Lease with a strategy: a gate-on server refuses it otherwise (422)",
		File:     "decide.go",
		Original: `lease.Spec.Strategy != nil && *lease.Spec.Strategy != ""`,
		Mutated:  `true`,
		Tests:    []string{"TestYieldWithoutStrategyNamesSuccessorInAnnotationOnly", "TestWritesSpecPreference"},
		Contract: true,
	},
	{
		Name:     "spec-preference-after-dropped",
		Point:    "once a server dropped spec.preferredHolder from a release, later releases do not write it",
		File:     "decide.go",
		Original: `return successor != "" && !dropped && lease != nil &&`,
		Mutated:  `return successor != "" && lease != nil &&`,
		Tests:    []string{"TestYieldStopsWritingSpecPreferredHolderOnceDropped", "TestWritesSpecPreference"},
		Contract: true,
	},
	{
		Name:     "versionless-stale-delivery",
		Point:    "on a server without resourceVersions, a version already seen replaced is a stale delivery, not news",
		File:     "view.go",
		Original: `(!newerLease(obs.lease, v.lease) || r.seenBefore(obs.lease))`,
		Mutated:  `(!newerLease(obs.lease, v.lease))`,
		Tests:    []string{"TestVersionlessStaleDeliveryIsIgnored", "TestPlainFakeYieldWritesSpecPreferredHolder"},
		Contract: true,
	},
	// Issue 21: the root mutations that survived an outside review.
	{
		Name:     "renew-timeout-not-capped",
		Point:    "the work is cancelled at the renew deadline even while a renewal hangs: its request timeout is capped at the deadline",
		File:     "renew.go",
		Original: `timeout := min(e.t.requestTimeout(), deadlineLeft(lastSent, sent, e.t.renewDeadline))`,
		Mutated:  `timeout := e.t.requestTimeout()`,
		Tests:    []string{"TestRenewDeadlineFromSendTime"},
		Contract: true,
	},
	{
		Name:     "rejoin-survives-step-down-timeout",
		Point:    "Run returns ErrStepDownTimeout, even with Rejoin, when the work did not return within StepDownTimeout",
		File:     "elector.go",
		Original: `errors.Is(err, ErrIdentityConflict) || errors.Is(err, ErrStepDownTimeout) {`,
		Mutated:  `errors.Is(err, ErrIdentityConflict) {`,
		Tests:    []string{"TestStepDownTimeoutEndsRunWithRejoinAndFailsCheck"},
		Contract: true,
	},
	{
		Name:     "give-up-not-recording-overdue-work",
		Point:    "Check fails while a work outlives StepDownTimeout",
		File:     "term_end.go",
		Original: `	overdue := e.workOutlived(t.work)`,
		Mutated:  `	var overdue <-chan struct{}`,
		Tests:    []string{"TestStepDownTimeoutEndsRunWithRejoinAndFailsCheck"},
		Contract: true,
	},
	// Issue 20: the deletion rule, refused releases, and yields.
	{
		Name:     "deletion-timed-from-first-sight",
		Point:    "after a deletion whose last state is unknown, the claim runs from when the deletion was learned, not from when the last version was seen",
		File:     "view.go",
		Original: `		v.observedAt, v.goneFinal = now, false`,
		Mutated:  `		v.goneFinal = false`,
		Tests:    []string{"TestDeletedAfterLostRaceWaitsOutUnseenHolder"},
		Contract: true,
	},
	{
		Name:  "deleted-unseen-holder-not-waited",
		Point: "a deleted Lease whose last state is unknown is created only after a whole lease duration",
		File:  "decide.go",
		Original: `		if !v.goneFinal {
			claim = max(claim, fallback)
		}`,
		Mutated:  ``,
		Tests:    []string{"TestDecideCampaign"},
		Contract: true,
	},
	{
		Name:  "former-holder-waits-after-delete",
		Point: "the former holder, whose own write was deleted, recreates the Lease as soon as its work stopped",
		File:  "renew.go",
		Original: `			r.markGone(nil, true)
			return sent, fmt.Errorf("%w: the lease was deleted", ErrLeaderLost)`,
		Mutated: `			r.markGone(nil, false)
			return sent, fmt.Errorf("%w: the lease was deleted", ErrLeaderLost)`,
		Tests:    []string{"TestDeletedLeaseLeaderAgainWithoutRequestLoop"},
		Contract: true,
	},
	{
		Name:     "refused-release-retried",
		Point:    "a release refused for good ends at once: Yield returns the refusal, Check reports it",
		File:     "renew.go",
		Original: `		case refusal(err, false):`,
		Mutated:  `		case false:`,
		Tests:    []string{"TestReleaseRefusedEndsAtOnce"},
		Contract: true,
	},
	{
		Name:  "refused-yield-retakes-own-lease",
		Point: "a yielder whose release was refused sits out until the successor had its chance",
		File:  "term_end.go",
		Original: `		case t.r.view.ours():
			// The release failed`,
		Mutated: `		case false:
			// The release failed`,
		Tests:    []string{"TestReleaseRefusedEndsAtOnce"},
		Contract: true,
	},
	{
		Name:  "yield-ends-run",
		Point: "a yield keeps the process: Run follows again whatever Rejoin says",
		File:  "elector.go",
		Original: `	if errors.Is(err, errYielded) {
		if ctx.Err() != nil {`,
		Mutated: `	if errors.Is(err, errYielded) && e.cfg.Rejoin {
		if ctx.Err() != nil {`,
		Tests:    []string{"TestYieldToNamedSuccessor", "TestBackToBackYieldsKeepAFleetLed"},
		Contract: true,
	},
	{
		Name:     "sit-out-whole-lease-duration",
		Point:    "a yielder sits out only until another candidate writes the Lease",
		File:     "campaign.go",
		Original: `return now.Before(r.sitOutUntil) && !r.view.gone && versionOf(r.view.lease) == r.sitOutVersion`,
		Mutated:  `return now.Before(r.sitOutUntil)`,
		Tests:    []string{"TestBackToBackYieldsKeepAFleetLed"},
		Contract: true,
	},
	{
		Name:     "suspend-ignored",
		Point:    "a leader resumed after a suspend longer than RenewDeadline no longer leads (time since boot counts the suspend)",
		File:     "instant.go",
		Original: `		d = max(d, to.boot-from.boot)`,
		Mutated:  `		_ = d`,
		Tests:    []string{"TestSuspendLongerThanRenewDeadlineEndsTheTerm", "TestLeaderValid"},
		Contract: true,
	},
	{
		Name:     "watch-reopened-at-once",
		Point:    "every loop that talks to the API server backs off: a watch the server ends at once is reopened with backoff",
		File:     "follow.go",
		Original: `		} else if quick++; quick > 1 && !backoff.Wait(ctx) {`,
		Mutated:  `		} else if quick++; false {`,
		Tests:    []string{"TestWatchEndedAtOnceIsReopenedWithBackoff"},
		Contract: true,
	},
	{
		Name:     "create-in-flight-not-held-back",
		Point:    "a create that lands after the watch showed another holder's Lease, created and deleted in flight, starts no work before that claim runs out",
		File:     "campaign.go",
		Original: `				r.holdUntil, r.holdSaid = until, true`,
		Mutated:  `				_ = until`,
		Tests:    []string{"TestCreateOverAHolderSeenInFlightHoldsTheWork"},
		Contract: true,
	},
	{
		Name:     "deleted-claim-forgotten",
		Point:    "a deleted holder's claim outlives the Lease's later versions: no work starts before it runs out",
		File:     "view.go",
		Original: "\t\tif at.After(r.holdUntil) {\n\t\t\tr.holdUntil = at\n\t\t}",
		Mutated:  "\t\t_ = at",
		Tests:    []string{"TestDeletedHoldersClaimOutlivesLaterVersions"},
		Contract: true,
	},
	{
		Name:     "lost-while-stepping-waits-margin",
		Point:    "Run returns within StepDownTimeout of its ctx's cancellation, even when the term is lost while stepping down",
		File:     "term_end.go",
		Original: `			wait, stepDownEnds = max(left, 0), true`,
		Mutated:  `			stepDownEnds = true`,
		Tests:    []string{"TestLostTermWhileSteppingDownKeepsTheStepDownBound"},
		Contract: true,
	},
	{
		Name:  "release-past-step-down-timeout",
		Point: "Run returns within StepDownTimeout of its ctx's cancellation: the release is retried only within it",
		File:  "term_end.go",
		Original: `released = t.r.release(ctx, t.lastSent, successor, t.stepDownBy())
		if t.yield != nil`,
		Mutated: `released = t.r.release(ctx, t.lastSent, successor, time.Time{})
		if t.yield != nil`,
		Tests:    []string{"TestReleaseRetriesEndAtStepDownTimeout"},
		Contract: true,
	},
	{
		Name:     "step-down-counted-from-notice",
		Point:    "StepDownTimeout counts from the cancellation of Run's ctx, not from when the term loop noticed it",
		File:     "term.go",
		Original: `			if at := cancelledAt.Load(); at != nil && at.Before(t.steppingSince) {`,
		Mutated:  `			if at := cancelledAt.Load(); false && at != nil {`,
		Tests:    []string{"TestStepDownTimeoutCountsFromTheCancellation"},
		Contract: true,
	},
	{
		Name:     "renew-conflict-past-step-down",
		Point:    "Run returns within StepDownTimeout of its ctx's cancellation: a renewal's re-read after a conflict is bounded by the step-down too",
		File:     "renew.go",
		Original: `left := leaderTimeLeft(lastSent, e.now(), e.t.renewDeadline, by)`,
		Mutated:  `left := leaderTimeLeft(lastSent, e.now(), e.t.renewDeadline, time.Time{})`,
		Tests:    []string{"TestRenewalConflictDuringStepDownEndsByTheBound"},
		Contract: true,
	},
	{
		Name:     "own-lost-answer-is-identity-conflict",
		Point:    "one unrecognised version naming us after our own (our write whose answer was lost) is no identity conflict; a second one is",
		File:     "view.go",
		Original: `case prev != nil && leaserecord.Holder(prev) == self && !r.foreignSelf && prev.UID == obs.lease.UID:`,
		Mutated:  `case false:`,
		Tests:    []string{"TestOwnLostAnswerAfterManyFailedWritesIsNoIdentityConflict"},
		Contract: true,
	},
	{
		Name:     "stale-deletion-taken-as-new",
		Point:    "a deletion older than the view, delivered by a lagging watch, is stale: it neither replaces the view nor makes our own creation look like another process",
		File:     "view.go",
		Original: `case v.gone && obs.deleted && newer && obs.final != nil`,
		Mutated:  `case v.gone && obs.deleted && obs.final != nil`,
		Tests:    []string{"TestLaggingWatchDeliversOldDeletionAfterOurRecreate"},
		Contract: true,
	},
	{
		Name:     "renew-reread-uncapped",
		Point:    "the work is cancelled by lastSent + RenewDeadline: a leader's re-read after a conflict is bounded by the deadline",
		File:     "renew.go",
		Original: `if err := r.reread(ctx, min(e.t.requestTimeout(), left)); err != nil {`,
		Mutated:  `if err := r.reread(ctx, e.t.requestTimeout()); err != nil {`,
		Tests:    []string{"TestRenewalsReReadEndsByTheDeadline"},
		Contract: true,
	},
	{
		Name:     "renewal-not-hedged",
		Point:    "a renewal still unanswered after RetryPeriod is hedged by a second one from the same version",
		File:     "renew.go",
		Original: `			if !hedged && elapsed(lastSent, e.now()) < e.t.renewDeadline && (by.IsZero() || e.clock.Now().Before(by)) {`,
		Mutated:  `			if hedged && false {`,
		Tests:    []string{"TestHungRenewalIsHedgedThenRetriedAtOnce"},
		Contract: true,
	},
	{
		Name:     "own-stamp-forgotten",
		Point:    "a hand edit of this process's own last write is not another process using its identity, however many failed writes came since",
		File:     "view.go",
		Original: "\tif !r.ownStamp.IsZero() && t.Equal(r.ownStamp) {\n\t\treturn true\n\t}",
		Mutated:  "\t_ = t",
		Tests:    []string{"TestHandEditAfterManyFailedWritesIsNoIdentityConflict"},
		Contract: true,
	},
	{
		Name:  "renew-retried-past-deadline-after-reread",
		Point: "no renewal is sent once the renew deadline has passed by this clock, even when a re-read after a conflict was answered during a pause",
		File:  "renew.go",
		Original: `		if leaderTimeLeft(lastSent, e.now(), e.t.renewDeadline, by) <= 0 {
			return sent, fmt.Errorf("renew conflicted, and the renew deadline`,
		Mutated: `		if false {
			return sent, fmt.Errorf("renew conflicted, and the renew deadline`,
		Tests:    []string{"TestNoRenewalAfterADeadlinePassedDuringTheReread"},
		Contract: true,
	},
	{
		Name:     "unseen-deletion-forgets-claim",
		Point:    "a version of another object means the one in the view was deleted: its holder's claim runs from now, even when the deletion was never seen",
		File:     "view.go",
		Original: `prev.UID != obs.lease.UID {`,
		Mutated:  `prev.UID != obs.lease.UID && false {`,
		Tests:    []string{"TestUnseenDeletionOfAnotherHoldersLeaseKeepsItsClaim"},
		Contract: true,
	},
}
