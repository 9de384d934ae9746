// Package controllerruntime runs a controller-runtime manager's leader-only
// work under a leasehold.Elector instead of controller-runtime's own leader
// election (Gate), or spreads a controller's objects over every replica
// with leasehold's shard package (Sharder).
//
// The manager runs with LeaderElection: false, so that its caches, webhooks,
// metrics and health probes run on every replica. Runnables that need a
// leader (controllers, by default) go to a Gate instead: the Gate starts
// them when this process wins the Lease, with a context that is cancelled
// when the term ends and that carries the term (leasehold.TermFromContext),
// and the term ends only after all of them have returned. So leasehold's
// safety contract holds for controllers: the old leader's reconcilers have
// stopped before the Lease is released, and are cancelled at once when it
// is lost.
//
// sigs.k8s.io/controller-runtime's root package has the same name as this
// one; import it as ctrl, as its own documentation does.
//
// # Usage
//
//	mgr, _ := ctrl.NewManager(cfg, ctrl.Options{LeaderElection: false})
//	gate, _ := controllerruntime.New(mgr, leasehold.Config{Lock: lock, ReleaseOnCancel: true})
//	_ = ctrl.NewControllerManagedBy(gate.Manager()).For(&corev1.ConfigMap{}).Complete(r)
//	_ = mgr.AddHealthzCheck("leader-election", controllerruntime.HealthzChecker(gate.Elector(), 20*time.Second))
//	_ = mgr.Start(ctx) // runs the gate too
//
// Build controllers against Gate.Manager(), not against the manager itself:
// a controller added to a manager whose leader election is off runs on
// every replica at once. The Gate enforces this when the manager starts,
// as the manager's caches sync:
//
//   - if the manager itself holds a leader-only runnable, Start fails,
//     before this replica campaigns, with an error that wraps
//     ErrUngatedRunnable and names the runnable, and the manager stops
//     with it; the runnable never starts, on any replica. It fails
//     likewise, with ErrManagerLeaderElection, when the manager runs its
//     own leader election;
//   - from then on the manager refuses leader-only runnables: it never
//     starts its own leader-election group, and mgr.Add of a leader-only
//     runnable (a controller built late with ctrl.NewControllerManagedBy(mgr))
//     returns controller-runtime's error "can't accept new runnable as stop
//     procedure is already engaged", which the manager's log explains.
//     Refused, not gated: the Gate cannot take a runnable out of mgr.Add,
//     and one that mgr.Add accepted would run at once on every replica.
//     Runnables added through Gate.Manager() after Start are gated as
//     before (they start when this replica leads, or at once if it leads),
//     and runnables meant for every replica are still accepted.
//
// controller-runtime does not export a manager's bookkeeping, so the Gate
// reads it, and seals the leader-election group, by reflection: it uses up
// the group's start (as the manager's own shutdown does to a group it
// never started) and marks it stopped. With a manager it cannot read
// (another implementation of manager.Manager, a Gate built after
// mgr.Start, or a controller-runtime release whose layout this package
// does not know), Start logs a warning instead and goes on, unprotected.
//
// # Why a gate, and not a resourcelock.Interface
//
// controller-runtime accepts a custom lock through
// Options.LeaderElectionResourceLockInterface. That would keep client-go's
// elector in charge, and a lock only answers Get, Create and Update: it
// cannot make the manager wait for its runnables to stop before the Lease
// is released, cannot cancel them the moment a foreign holder is seen, and
// cannot detect that another live process uses the same identity. The gate
// keeps the whole term in leasehold's hands.
//
// # One term per process
//
// A controller-runtime controller cannot be started twice, so a Gate leads
// at most once: when its term ends, Start returns (an error unless the
// manager's context was cancelled), the manager stops, and the process
// should exit and be restarted, as with controller-runtime's own leader
// election. Config.Rejoin is therefore refused, and a term handed over by
// Elector.Yield ends Start with ErrTermEnded: the elector itself follows
// again after a yield, so the Gate ends its Run once the term is over
// (after OnStoppedLeading), whether another replica takes the Lease or
// not.
//
// Controllers' EnableWarmup is not supported: their sources start when the
// term starts.
//
// # Sharded controllers
//
// With a Gate one replica reconciles everything. A Sharder instead cuts
// the reconciled objects into the K shards of a shard group
// (github.com/leasehold/leasehold/shard), by the hash of their namespace
// and name (FieldNamespacedName) or of their namespace
// (shard.FieldNamespace), and every replica reconciles the objects of the
// shards it owns, a fair share, and only those. The manager runs with
// LeaderElection: false on every replica; the Sharder is the replica's
// shard.Member, run by the manager. Wire the controller through it:
//
//	s, _ := controllerruntime.NewSharder(mgr, &corev1.ConfigMap{}, controllerruntime.FieldNamespacedName, shard.Config{
//		Namespace: "my-system", Group: "my-controller", Identity: id,
//		Client: clientset.CoordinationV1(), Shards: 16, ReleaseOnCancel: true})
//	_ = ctrl.NewControllerManagedBy(mgr).
//		For(&corev1.ConfigMap{}, builder.WithPredicates(s.Predicate())). // events of owned shards
//		WatchesRawSource(s.Source()). // an acquired shard: all its objects
//		Complete(s.Reconciler(r))     // r runs only while the shard is owned here
//
// What it guarantees:
//
//   - r is called only for objects whose shard runs here, with a context
//     that is cancelled as soon as the shard moves away;
//   - a shard is handed over only after its in-flight reconciles returned,
//     so two replicas never reconcile objects of one shard at once (the
//     shard package's contract, per shard);
//   - when a shard starts here, every object of it is enqueued, so objects
//     whose events went to the previous owner are reconciled here;
//   - a request's shard is a function of its NamespacedName alone, the
//     same on every replica whatever its cache holds: one NamespacedName is
//     never reconciled by two replicas at once, even across a delete and
//     re-create, and a deleted object's request reaches its shard's owner
//     whether or not that replica saw the deletion.
//
// shard.FieldUID is refused: a request names an object, not a UID, and an
// object re-created under the same name gets a new UID, hence another
// shard; two replicas whose caches held different UIDs for the name would
// reconcile it at once. Switching a running group from one field to
// another moves objects between shards: use a new shard.Config.Group for
// the new field, or stop the old replicas first. ShardOf computes an
// object's shard as every replica does.
//
// When a shard starts here its objects are listed through the manager's
// client. A list that fails transiently (the server unavailable or
// throttling, a timeout, the cache not started yet) is retried after 1s,
// then 2s, doubling up to 30s. One that fails for good (RBAC forbids it,
// the type is not served, not in the scheme, not in the cache) ends the
// Sharder: it hands its shards over and its Start returns an error that
// wraps the list's and names the fix, which stops the manager.
//
// The manager's cache still holds every object of the type:
// controller-runtime's cache cannot set a KEP-5866 shard selector, so
// sharding here splits the reconciling, not the memory. For
// server-side filtering run a per-shard informer in shard.Config's
// OnShardStarted instead (examples/sharded-controller).
//
// A Sharder serves one controller. To run it in a manager that also has a
// Gate, build the sharded controller with controller.Options{
// NeedLeaderElection: ptr.To(false)}: otherwise the Gate's start check
// reports it as a leader-only runnable outside the gate.
package controllerruntime
