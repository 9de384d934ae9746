package main

// coordinatedMutations break the contract points of coordinated election
// (coordinated.go, root package). See mutations_root.go for the format.
var coordinatedMutations = []mutation{
	{
		Name:     "coordinated-assigned-ignores-acquire-time",
		Point:    "only the election controller's write (acquireTime unset) is an assignment; an elector's own old write is not",
		File:     "coordinated.go",
		Original: `leaserecord.Holder(lease) == c.lock.Identity && lease.Spec.AcquireTime == nil`,
		Mutated:  `leaserecord.Holder(lease) == c.lock.Identity`,
		Tests:    []string{"TestCoordinatedOwnOldWriteIsNotAnAssignment"},
		Contract: true,
	},
	{
		Name:     "coordinated-assignment-seen-first-taken-at-once",
		Point:    "an assignment seen before any other version waits a whole claim: the previous holder's work may still run",
		File:     "coordinated.go",
		Original: `		case c.assigned(v.lease) && first:`,
		Mutated:  `		case false && first:`,
		Tests:    []string{"TestCoordinatedAssignmentSeenFirstWaitsAWholeClaim"},
		Contract: true,
	},
	{
		Name:     "coordinated-assignment-ignores-previous-claim",
		Point:    "the chosen candidate starts only once the previous holder's claim has run out by its own clock, whatever the controller's clock",
		File:     "coordinated.go",
		Original: `		if now.Before(c.claimEnds) {`,
		Mutated:  `		if false {`,
		Tests:    []string{"TestCoordinatedAssignmentSeenFirstWaitsAWholeClaim"},
		Contract: true,
	},
	{
		Name:     "coordinated-assignment-taken-for-identity-conflict",
		Point:    "the election controller's assignment naming this process is no identity conflict, after its own term on a re-created Lease or when the controller writes it again",
		File:     "view.go",
		Original: `	case r.e.coord.assigned(obs.lease):`,
		Mutated:  `	case false && r.e.coord.assigned(obs.lease):`,
		Tests:    []string{"TestCoordinatedReassignedAfterDeletion", "TestCoordinatedPreferredHolderOnAnAssignmentNotTakenUp"},
		Contract: true,
	},
	{
		Name:     "coordinated-work-waits-for-withdrawal",
		Point:    "Run's cancellation cancels the work at once, however slow the LeaseCandidate's withdrawal; StepDownTimeout counts from the cancellation",
		File:     "coordinated.go",
		Original: `	unhook := context.AfterFunc(ctx, stopElector)`,
		Mutated:  `	unhook := func() bool { return false }`,
		Tests:    []string{"TestCoordinatedCancelStopsTheWorkWhileWithdrawing"},
		Contract: true,
	},
	{
		Name:     "coordinated-release-before-withdrawal",
		Point:    "on shutdown the LeaseCandidate is withdrawn before the Lease is released, so the controller cannot assign it back to the leaving process",
		File:     "renew.go",
		Original: `	e.coord.awaitWithdrawal(by)`,
		Mutated:  ``,
		Tests:    []string{"TestCoordinatedWithdrawsBeforeStepDown", "TestCoordinatedCancelStopsTheWorkWhileWithdrawing"},
		Contract: true,
	},
	{
		Name:     "coordinated-superseded-term-forgotten",
		Point:    "an assignment delivered together with the term another candidate took up before it waits out that term's claim",
		File:     "view.go",
		Original: `	r.e.coord.noteSuperseded(r, obs.superseded, now)`,
		Mutated:  ``,
		Tests:    []string{"TestCoordinatedAssignmentWaitsOutASupersededTerm"},
		Contract: true,
	},
}
