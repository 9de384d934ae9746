// Package controllerruntime runs a controller-runtime manager's leader-only
// work under a leasehold.Elector instead of controller-runtime's own leader
// election.
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
// every replica at once. The Gate checks this when the manager starts:
// if the manager itself holds a leader-only runnable, Start fails, before
// this replica campaigns, with an error that wraps ErrUngatedRunnable and
// names the runnable, and the manager stops with it. It fails likewise, with ErrManagerLeaderElection, when the
// manager runs its own leader election. The check reads controller-runtime's
// manager, whose bookkeeping is not exported; with a manager it cannot
// read (another implementation of manager.Manager, or a controller-runtime
// release whose layout this package does not know), Start logs a warning
// instead and goes on.
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
// Elector.Yield ends Start with ErrTermEnded.
//
// Controllers' EnableWarmup is not supported: their sources start when the
// term starts.
package controllerruntime
