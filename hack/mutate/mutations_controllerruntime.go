package main

// controllerRuntimeMutations break the contract points of module
// controllerruntime (the Gate and the Sharder; Pkg "controllerruntime")
// and of module metrics/prometheus (Pkg "metrics/prometheus"), one
// mutation per point at least. See mutations_root.go for the format.
var controllerRuntimeMutations = append(append(gateMutations, sharderMutations...), metricsMutations...)

// gateMutations break the Gate: leader-only runnables run only while this
// process leads, with a context cancelled when the term ends, and the term
// ends (the Lease is released) only after all of them returned; the Gate
// leads once and is closed when its term ends; the manager itself never
// runs a leader-only runnable.
var gateMutations = []mutation{
	{
		Name:  "gate-left-open",
		Point: "the Gate is closed when its term ends: a runnable added then (from OnStoppedLeading, after the release) never starts",
		File:  "controllerruntime/gate.go",
		Original: `	g.term, g.closed = nil, true
`,
		Mutated: `	// mutated: the Gate stays open after its term
`,
		Pkg:      "controllerruntime",
		Tests:    []string{"TestTheGateIsClosedWhenTheTermEnds"},
		Contract: true,
	},
	{
		Name:  "gate-reopened-for-pending",
		Point: "the Gate is closed when its term ends, not merely emptied: an Add after the term returns ErrTermEnded",
		File:  "controllerruntime/gate.go",
		Original: `	g.term, g.closed = nil, true
`,
		Mutated: `	g.term = nil
`,
		Pkg:      "controllerruntime",
		Tests:    []string{"TestTheGateIsClosedWhenTheTermEnds"},
		Contract: true,
	},
	{
		Name:  "release-before-runnables-return",
		Point: "the term ends, and the Lease is released, only after every leader-only runnable returned",
		File:  "controllerruntime/gate.go",
		Original: `	t.wg.Wait()
`,
		Mutated: `	// mutated: the runnables are not waited for
`,
		Pkg:      "controllerruntime",
		Tests:    []string{"TestRunnablesStartOnlyWhenLeadingAndStopBeforeRelease", "TestFailingRunnableEndsTheTerm"},
		Contract: true,
	},
	{
		Name:     "runnables-outlive-the-term",
		Point:    "the runnables' context is cancelled the moment the term ends (a lost Lease cancels them at once)",
		File:     "controllerruntime/gate.go",
		Original: `	tctx, cancel := context.WithCancelCause(ctx)`,
		Mutated:  `	tctx, cancel := context.WithCancelCause(context.WithoutCancel(ctx))`,
		Pkg:      "controllerruntime",
		Tests:    []string{"TestLostLeaseCancelsRunnables"},
		Contract: true,
	},
	{
		Name:     "failing-runnable-keeps-the-term",
		Point:    "a runnable that returns an error ends the term: the others are cancelled and Start returns the error",
		File:     "controllerruntime/gate.go",
		Original: `		t.cancel(fmt.Errorf("leader-only runnable %T failed: %w", r, err))`,
		Mutated:  `		_ = fmt.Errorf("leader-only runnable %T failed: %w", r, err)`,
		Pkg:      "controllerruntime",
		Tests:    []string{"TestFailingRunnableEndsTheTerm"},
		Contract: true,
	},
	{
		Name:     "panic-not-recovered",
		Point:    "a panic in a runnable is recovered and treated as an error",
		File:     "controllerruntime/gate.go",
		Original: `		if p := recover(); p != nil {`,
		Mutated:  `		if p := any(nil); p != nil {`,
		Pkg:      "controllerruntime",
		Tests:    []string{"TestPanickingRunnableIsAnError"},
		Contract: true,
	},
	{
		Name:     "yield-keeps-following",
		Point:    "a Gate leads once: after a yielded term Start returns ErrTermEnded instead of following on",
		File:     "controllerruntime/gate.go",
		Original: `		defer g.stopRun()`,
		Mutated:  `		defer func() {}()`,
		Pkg:      "controllerruntime",
		Tests:    []string{"TestYieldEndsStartWithErrTermEnded"},
		Contract: true,
	},
	{
		Name:     "view-sends-leader-only-to-the-manager",
		Point:    "Gate.Manager().Add sends leader-only runnables (controllers) to the Gate",
		File:     "controllerruntime/gate.go",
		Original: `	if NeedsLeader(r) {`,
		Mutated:  `	if false && NeedsLeader(r) {`,
		Pkg:      "controllerruntime",
		Tests:    []string{"TestBuilderControllersGoToTheGate", "TestWithARealManager"},
		Contract: true,
	},
	{
		Name:     "ungated-runnable-not-reported",
		Point:    "Start fails with ErrUngatedRunnable, before campaigning, when the manager itself holds a leader-only runnable",
		File:     "controllerruntime/check.go",
		Original: `		if len(ungated) > 0 {`,
		Mutated:  `		if false && len(ungated) > 0 {`,
		Pkg:      "controllerruntime",
		Tests:    []string{"TestStartFailsOnLeaderOnlyRunnablesOfTheManagerItself"},
		Contract: true,
	},
	{
		Name:     "manager-election-not-refused",
		Point:    "Start fails with ErrManagerLeaderElection when the manager runs its own leader election",
		File:     "controllerruntime/check.go",
		Original: `	if !v.FieldByName("resourceLock").IsNil() {`,
		Mutated:  `	if false && !v.FieldByName("resourceLock").IsNil() {`,
		Pkg:      "controllerruntime",
		Tests:    []string{"TestStartFailsWhenTheManagerElectsItself"},
		Contract: true,
	},
	{
		Name:  "manager-not-sealed",
		Point: "the manager never runs a leader-only runnable: one found at the check never starts, and one added after Start is refused",
		File:  "controllerruntime/check.go",
		Original: `		seal(group)
`,
		Mutated: `		_ = seal
`,
		Pkg:      "controllerruntime",
		Tests:    []string{"TestRunnablesAddedToTheManagerAfterStartAreRefused", "TestStartFailsOnLeaderOnlyRunnablesOfTheManagerItself"},
		Contract: true,
	},
	{
		Name:  "seal-accepts-silently",
		Point: "a leader-only runnable added to the manager after Start is refused by mgr.Add, not accepted and silently never run",
		File:  "controllerruntime/check.go",
		Original: `	*stopped = true
`,
		Mutated: `	_ = stopped
`,
		Pkg:      "controllerruntime",
		Tests:    []string{"TestRunnablesAddedToTheManagerAfterStartAreRefused"},
		Contract: true,
	},
}

// sharderMutations break the Sharder: a request reaches the reconciler
// only while its shard runs here, with a context cancelled when the shard
// moves; a shard is handed over only after its reconciles returned; an
// acquired shard's objects are all enqueued; a request's shard is a
// function of its NamespacedName alone (one name never in two replicas at
// once), spread evenly; list failures are classified and bounded.
var sharderMutations = []mutation{
	{
		Name:     "reconcile-outside-owned-shards",
		Point:    "a request reaches the reconciler only while its shard runs here",
		File:     "controllerruntime/sharder_run.go",
		Original: `			return reconcile.Result{}, nil // another replica's, or moving there`,
		Mutated:  `			return r.Reconcile(ctx, req)`,
		Pkg:      "controllerruntime",
		Tests:    []string{"TestSharderReconcilerFiltersRequests", "TestSharderNeverReconcilesOneNameInTwoReplicas", "TestSharderConfinesTheReconcilerAndEnqueuesAcquiredShards"},
		Contract: true,
	},
	{
		Name:  "handover-before-reconciles-return",
		Point: "a shard is handed over only after its in-flight reconciles returned",
		File:  "controllerruntime/sharder_run.go",
		Original: `		for s.inflight[i] > 0 {
			s.drained.Wait()
		}
`,
		Mutated: `		// mutated: in-flight reconciles are not waited for
`,
		Pkg:      "controllerruntime",
		Tests:    []string{"TestSharderHandsAShardOverAfterItsReconcilesReturned"},
		Contract: true,
	},
	{
		Name:     "reconcile-not-cancelled-on-move",
		Point:    "a reconcile's context is cancelled as soon as its shard moves away",
		File:     "controllerruntime/sharder_run.go",
		Original: `		defer context.AfterFunc(shardCtx, cancel)()`,
		Mutated:  `		defer func() {}()`,
		Pkg:      "controllerruntime",
		Tests:    []string{"TestSharderHandsAShardOverAfterItsReconcilesReturned"},
		Contract: true,
	},
	{
		Name:     "acquired-shard-not-enqueued",
		Point:    "when a shard starts here, every object of it is enqueued",
		File:     "controllerruntime/sharder_run.go",
		Original: `		case s.events <- event.GenericEvent{Object: obj}:`,
		Mutated:  `		case <-make(chan event.GenericEvent):`,
		Pkg:      "controllerruntime",
		Tests:    []string{"TestSharderConfinesTheReconcilerAndEnqueuesAcquiredShards"},
		Contract: true,
	},
	{
		Name:     "predicate-passes-every-event",
		Point:    "Predicate keeps only the events of objects whose shard runs here",
		File:     "controllerruntime/sharder.go",
		Original: `		CreateFunc:  func(e event.CreateEvent) bool { return s.ownsObject(e.Object) },`,
		Mutated:  `		CreateFunc:  func(e event.CreateEvent) bool { return true },`,
		Pkg:      "controllerruntime",
		Tests:    []string{"TestSharderConfinesTheReconcilerAndEnqueuesAcquiredShards"},
		Contract: true,
	},
	{
		Name:  "shard-from-the-cached-uid",
		Point: "a request's shard is a function of its NamespacedName alone, not of what this replica's cache holds: one name is never reconciled by two replicas at once across a delete and re-create",
		File:  "controllerruntime/sharder_run.go",
		Original: `		i, err := s.shardOf(req.NamespacedName)
		if err != nil {`,
		Mutated: `		i, err := s.shardOf(req.NamespacedName)
		if cm := s.obj.DeepCopyObject().(client.Object); s.reader.Get(ctx, req.NamespacedName, cm) == nil {
			i, err = shard.Of(cm, shard.FieldUID, s.shards)
		}
		if err != nil {`,
		Pkg:      "controllerruntime",
		Tests:    []string{"TestSharderNeverReconcilesOneNameInTwoReplicas"},
		Contract: true,
	},
	{
		Name:     "field-uid-accepted",
		Point:    "NewSharder refuses shard.FieldUID, saying why and naming FieldNamespacedName",
		File:     "controllerruntime/sharder.go",
		Original: `	case shard.FieldUID:`,
		Mutated:  `	case "object.metadata.uid (mutated)":`,
		Pkg:      "controllerruntime",
		Tests:    []string{"TestNewSharderRefusesBadArguments"},
		Contract: true,
	},
	{
		Name:     "name-shard-ignores-namespace",
		Point:    "FieldNamespacedName hashes namespace and name",
		File:     "controllerruntime/sharder_run.go",
		Original: `		return nameShard(key.String(), shards), nil`,
		Mutated:  `		return nameShard(key.Name, shards), nil`,
		Pkg:      "controllerruntime",
		Tests:    []string{"TestSharderConfinesTheReconcilerAndEnqueuesAcquiredShards", "TestSharderReconcilerFiltersRequests"},
		Contract: true,
	},
	{
		Name:  "name-hash-unmixed",
		Point: "FieldNamespacedName spreads names alike evenly, with a hash fixed across releases",
		File:  "controllerruntime/sharder.go",
		Original: `	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
`,
		Mutated: `	// mutated: no mixing
`,
		Pkg:      "controllerruntime",
		Tests:    []string{"TestNameShardSpreadsNamesAlike", "TestNameShardIsStable"},
		Contract: true,
	},
	{
		Name:     "list-retry-without-backoff",
		Point:    "a transient list failure is retried with a backoff that doubles from listRetry",
		File:     "controllerruntime/sharder_run.go",
		Original: `	bo := retry.NewBackoff(s.clock, listRetry, listRetryMax)`,
		Mutated:  `	bo := retry.NewBackoff(s.clock, listRetry, listRetry)`,
		Pkg:      "controllerruntime",
		Tests:    []string{"TestSharderRetriesATransientListFailureWithBackoff"},
		Contract: true,
	},
	{
		Name:     "list-backoff-unbounded",
		Point:    "the list backoff is bounded by listRetryMax",
		File:     "controllerruntime/sharder_run.go",
		Original: `	bo := retry.NewBackoff(s.clock, listRetry, listRetryMax)`,
		Mutated:  `	bo := retry.NewBackoff(s.clock, listRetry, time.Hour)`,
		Pkg:      "controllerruntime",
		Tests:    []string{"TestSharderRetriesATransientListFailureWithBackoff"},
		Contract: true,
	},
	{
		Name:     "list-permanent-failure-retried",
		Point:    "a permanent list failure (RBAC, type not served, not cached) is not retried: it ends the Sharder",
		File:     "controllerruntime/sharder_run.go",
		Original: `		if fix, permanent := listFailure(err); permanent {`,
		Mutated:  `		if fix, permanent := listFailure(err); false && permanent {`,
		Pkg:      "controllerruntime",
		Tests:    []string{"TestSharderEndsOnAPermanentListFailure"},
		Contract: true,
	},
	{
		Name:     "list-permanent-failure-swallowed",
		Point:    "a permanent list failure ends Start with an error wrapping the list's and naming the fix",
		File:     "controllerruntime/sharder.go",
		Original: `	return errors.Join(failed, err)`,
		Mutated: `	_ = failed
	return err`,
		Pkg:      "controllerruntime",
		Tests:    []string{"TestSharderEndsOnAPermanentListFailure"},
		Contract: true,
	},
}

// metricsMutations break metrics/prometheus: New works on a registry that
// already holds client-go's collectors (controller-runtime's), rolls back
// on a clash, creates every series of an election at zero, and covers
// LeaseDuration-long takeovers with finite buckets.
var metricsMutations = []mutation{
	{
		Name:     "metrics-no-reuse",
		Point:    "New reuses a collector of the same description already registered (controller-runtime's leader_election_master_status)",
		File:     "metrics/prometheus/prometheus.go",
		Original: `			return existing, nil`,
		Mutated:  `			return existing, err`,
		Pkg:      "metrics/prometheus",
		Tests:    []string{"TestNewReusesClientGosStatusGauge", "TestSecondNewOnOneRegistryShares"},
		Contract: true,
	},
	{
		Name:     "metrics-help-drift",
		Point:    "leader_election_master_status keeps client-go's help text word for word, so that controller-runtime's gauge is reused",
		File:     "metrics/prometheus/prometheus.go",
		Original: `0 indicates backup, 1 indicates master. 'name' is the string used to identify the lease. Please make sure to group by name."`,
		Mutated:  `0 indicates backup, 1 indicates master."`,
		Pkg:      "metrics/prometheus",
		Tests:    []string{"TestNewReusesClientGosStatusGauge"},
		Contract: true,
	},
	{
		Name:     "metrics-clash-on-controller-runtime",
		Point:    "the recipe leaseholdprom.New(crmetrics.Registry) works with controller-runtime's own collectors registered (the issue's clash)",
		File:     "metrics/prometheus/prometheus.go",
		Original: `0 indicates backup, 1 indicates master. 'name' is the string used to identify the lease. Please make sure to group by name."`,
		Mutated:  `0 indicates backup, 1 indicates master."`,
		Pkg:      "controllerruntime",
		Tests:    []string{"TestMetricsRecipeOnAControllerRuntimeManager"},
		Contract: true,
	},
	{
		Name:     "metrics-no-rollback",
		Point:    "a New that fails registers nothing",
		File:     "metrics/prometheus/prometheus.go",
		Original: `			reg.Unregister(c)`,
		Mutated:  `			_ = c`,
		Pkg:      "metrics/prometheus",
		Tests:    []string{"TestNewRefusesAClashAndRegistersNothing"},
		Contract: true,
	},
	{
		Name:  "metrics-counters-not-initialised",
		Point: "every series of an election exists, at zero, from leasehold.New on",
		File:  "metrics/prometheus/prometheus.go",
		Original: `	m.slowPath.WithLabelValues(name)
	m.transitions.WithLabelValues(name)
`,
		Mutated: `	// mutated: counters created at their first event
`,
		Pkg:      "metrics/prometheus",
		Tests:    []string{"TestSeriesExistAtZeroBeforeTheFirstEvent", "ExampleNew"},
		Contract: true,
	},
	{
		Name:     "metrics-takeover-buckets-short",
		Point:    "takeover_duration buckets reach several LeaseDurations",
		File:     "metrics/prometheus/prometheus.go",
		Original: `1, 2.5, 5, 10, 15, 20, 30, 45, 60, 90, 120}`,
		Mutated:  `1, 2.5}`,
		Pkg:      "metrics/prometheus",
		Tests:    []string{"TestTakeoverBucketsReachLeaseDuration"},
		Contract: true,
	},
}
