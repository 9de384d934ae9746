package integration

import (
	"context"
	"sort"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/leasehold/leasehold"
	"github.com/leasehold/leasehold/controllerruntime"
	"github.com/leasehold/leasehold/test/testkit"
)

// reconcileLog records every reconcile of the test's replicas.
type reconcileLog struct {
	mu      sync.Mutex
	entries []reconcileEntry
}

type reconcileEntry struct {
	replica, name string
	start, end    time.Time
}

func (l *reconcileLog) reconciler(replica string) reconcile.Func {
	return func(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
		start := time.Now()
		time.Sleep(5 * time.Millisecond) // a little work, so that start and end differ
		l.mu.Lock()
		l.entries = append(l.entries, reconcileEntry{replica: replica, name: req.Name, start: start, end: time.Now()})
		l.mu.Unlock()
		return reconcile.Result{}, nil
	}
}

func (l *reconcileLog) of(replica string) []reconcileEntry {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []reconcileEntry
	for _, e := range l.entries {
		if e.replica == replica {
			out = append(out, e)
		}
	}
	return out
}

func (l *reconcileLog) reconciled(replica, name string) bool {
	for _, e := range l.of(replica) {
		if e.name == name {
			return true
		}
	}
	return false
}

// crReplica is one controller-runtime manager with a controllerruntime Gate.
type crReplica struct {
	id                  string
	rec                 *testkit.Wire // the elector's Lease requests
	gate                *controllerruntime.Gate
	*testkit.Background // mgr.Start
}

func startCRReplica(t *testing.T, id, ns, lease string, rl *reconcileLog, logs *testkit.Logs) *crReplica {
	t.Helper()
	cfg := cp.Config()
	mgr, err := manager.New(cfg, manager.Options{
		LeaderElection:         false,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Cache:                  cache.Options{DefaultNamespaces: map[string]cache.Config{ns: {}}},
		Logger:                 logs.Logger(id + "/mgr"),
	})
	testkit.Must(t, err)
	rec := &testkit.Wire{}
	cs := clientFor(cfg, std.D, rec)
	gate, err := controllerruntime.New(mgr, leasehold.Config{
		Lock:            &leasehold.LeaseLock{Namespace: ns, Name: lease, Identity: id, Client: cs.CoordinationV1()},
		LeaseDuration:   std.L,
		RenewDeadline:   std.D,
		RetryPeriod:     std.P,
		ReleaseOnCancel: true,
	})
	testkit.Must(t, err)
	// Controller names are unique per process: one per replica.
	err = ctrl.NewControllerManagedBy(gate.Manager()).
		Named("configmaps-" + id).
		For(&corev1.ConfigMap{}).
		Complete(rl.reconciler(id))
	testkit.Must(t, err)
	testkit.Must(t, mgr.AddHealthzCheck("leader-election", controllerruntime.HealthzChecker(gate.Elector(), std.P)))

	return &crReplica{id: id, rec: rec, gate: gate,
		Background: testkit.Go(t, klog.NewContext(context.Background(), logs.Logger(id)), id+"'s manager", 40*time.Second, mgr.Start)}
}

func (r *crReplica) elected() bool {
	select {
	case <-r.gate.Elected():
		return true
	default:
		return false
	}
}

// TestCRLeader runs two controller-runtime managers in this process, each
// with a controllerruntime Gate on the same Lease and a ConfigMap controller built
// against gate.Manager(): only the leader reconciles, and when its manager
// stops the other takes over at once, with no reconcile overlapping.
func TestCRLeader(t *testing.T) {
	ctx := context.Background()
	ns, lease := newNamespace(t), "cr-leader"
	rl, logs := &reconcileLog{}, testkit.NewLogs(t, 4)
	a := startCRReplica(t, "replica-a", ns, lease, rl, logs)
	b := startCRReplica(t, "replica-b", ns, lease, rl, logs)

	var leader, follower *crReplica
	select {
	case <-a.gate.Elected():
		leader, follower = a, b
	case <-b.gate.Elected():
		leader, follower = b, a
	case <-time.After(20 * time.Second):
		t.Fatal("no replica was elected within 20s")
	}
	if follower.elected() {
		t.Fatal("both replicas elected")
	}
	if got := testkit.Holder(testkit.GetLease(t, admin, ns, lease)); got != leader.id {
		t.Fatalf("Lease held by %q; %s says it leads", got, leader.id)
	}

	cms := []string{"cm-1", "cm-2", "cm-3"}
	for _, n := range cms {
		_, err := admin.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: n}, Data: map[string]string{"k": n},
		}, metav1.CreateOptions{})
		testkit.Must(t, err)
	}
	testkit.Eventually(t, 10*time.Second, "the leader to reconcile every ConfigMap", func() bool {
		for _, n := range cms {
			if !rl.reconciled(leader.id, n) {
				return false
			}
		}
		return true
	})
	// Give a wrongly running follower controller the time to show itself.
	time.Sleep(2 * std.P)
	if got := rl.of(follower.id); len(got) != 0 {
		t.Fatalf("the follower %s reconciled %d times while %s led: %+v", follower.id, len(got), leader.id, got)
	}
	if follower.elected() {
		t.Fatal("follower elected while the leader runs")
	}
	if err := leader.gate.Elector().Check(std.P); err != nil {
		t.Errorf("leader Check: %v", err)
	}
	if err := follower.gate.Elector().Check(std.P); err != nil {
		t.Errorf("follower Check: %v", err)
	}

	// Stop the leader's manager: ReleaseOnCancel hands the Lease over.
	cancelled := time.Now()
	leader.Cancel()
	select {
	case <-follower.gate.Elected():
	case <-time.After(5 * time.Second):
		t.Fatalf("%s not elected within 5s of %s's manager being stopped", follower.id, leader.id)
	}
	elected := time.Now()
	takeover := elected.Sub(cancelled)
	if err := leader.Wait(t, 30*time.Second); err != nil {
		t.Errorf("%s: manager.Start returned %v after its ctx was cancelled, want nil", leader.id, err)
	}
	// At once: through the release, seen on the follower's watch.
	var releases []testkit.Call
	for _, c := range leader.rec.All() {
		if c.OK() && c.Verb == "update" && c.HasBody && c.Holder == "" {
			releases = append(releases, c)
		}
	}
	if len(releases) != 1 {
		t.Fatalf("%s: %d successful releases, want 1", leader.id, len(releases))
	}
	checkReleaseHandoff(t, follower.id, elected.Sub(releases[0].Sent), std, follower.rec, cancelled)

	_, err := admin.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "cm-after"}, Data: map[string]string{"k": "after"},
	}, metav1.CreateOptions{})
	testkit.Must(t, err)
	testkit.Eventually(t, 10*time.Second, "the new leader to reconcile cm-after", func() bool { return rl.reconciled(follower.id, "cm-after") })
	if rl.reconciled(leader.id, "cm-after") {
		t.Errorf("the stopped leader %s reconciled cm-after", leader.id)
	}

	// The new leader reconciles the existing ConfigMaps too (its initial
	// list), in no particular order relative to cm-after.
	testkit.Eventually(t, 10*time.Second, "the new leader to reconcile the existing ConfigMaps", func() bool {
		for _, n := range cms {
			if !rl.reconciled(follower.id, n) {
				return false
			}
		}
		return true
	})
	// No overlap: every reconcile of the old leader ended before the new
	// leader's first one started.
	olds, news := rl.of(leader.id), rl.of(follower.id)
	sort.Slice(news, func(i, j int) bool { return news[i].start.Before(news[j].start) })
	firstNew := news[0].start
	var lastOld time.Time
	for _, e := range olds {
		if e.end.After(lastOld) {
			lastOld = e.end
		}
		if !e.end.Before(firstNew) {
			t.Errorf("overlap: %s reconciled %s until %s, after %s's first reconcile at %s",
				leader.id, e.name, e.end.Format("15:04:05.000"), follower.id, firstNew.Format("15:04:05.000"))
		}
	}
	if l := testkit.Holder(testkit.GetLease(t, admin, ns, lease)); l != follower.id {
		t.Errorf("Lease held by %q after the takeover, want %s", l, follower.id)
	}
	t.Logf("old leader %s: %d reconciles; new leader %s: %d; takeover %v; gap between last old and first new reconcile %v; first new reconcile %v after cancel",
		leader.id, len(olds), follower.id, len(news), takeover.Round(time.Millisecond),
		firstNew.Sub(lastOld).Round(time.Millisecond), firstNew.Sub(cancelled).Round(time.Millisecond))
}
