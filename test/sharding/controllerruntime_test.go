package sharding

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/leasehold/leasehold"
	"github.com/leasehold/leasehold/controllerruntime"
	"github.com/leasehold/leasehold/shard"
)

// A controller-runtime controller sharded with controllerruntime.Sharder,
// replicas as separate managers on the real control plane:
//
//   - the reconciler sees only objects of shards its replica owns (a
//     request of a shard not owned here is a failure unless its context is
//     being cancelled because the shard is moving away), and never objects
//     of one shard in two replicas at once;
//   - every ConfigMap is reconciled by the owner of its shard, also when a
//     watch of another type enqueues every ConfigMap in every replica;
//   - when b leaves, a is sent and reconciles every ConfigMap of the shards
//     it takes over, with no event on those ConfigMaps: only the Sharder's
//     Source can have enqueued them;
//   - when c joins, it reconciles the ConfigMaps of the shards it acquires;
//   - a deleted ConfigMap's request reaches its shard's owner.
func TestControllerRuntimeSharder(t *testing.T) {
	const shards = 4
	ns := newNamespace(t)
	cms := createConfigMaps(t, admin, ns, "cm", 40)
	shardOf := map[string]int{}
	for i := range cms {
		shardOf[cms[i].Name], _ = controllerruntime.ShardOf(types.NamespacedName{Namespace: cms[i].Namespace, Name: cms[i].Name}, controllerruntime.FieldNamespacedName, shards)
	}

	var mu sync.Mutex
	active := map[int]string{}       // shard -> replica reconciling it now
	reconciled := map[string][]rec{} // name -> reconciles
	var bad []string
	failf := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		bad = append(bad, fmt.Sprintf(format, args...))
	}

	type replica struct {
		s      *controllerruntime.Sharder
		cancel context.CancelFunc
		done   chan error
	}
	start := func(id string) *replica {
		mgr, err := ctrl.NewManager(cp.Config(), ctrl.Options{
			Cache:   cache.Options{DefaultNamespaces: map[string]cache.Config{ns: {}}},
			Metrics: metricsserver.Options{BindAddress: "0"},
		})
		if err != nil {
			t.Fatal(err)
		}
		cs := kubernetes.NewForConfigOrDie(leasehold.WithRequestTimeout(cp.Config(), fast.D))
		s, err := controllerruntime.NewSharder(mgr, &corev1.ConfigMap{}, controllerruntime.FieldNamespacedName, shard.Config{
			Namespace: ns, Group: "cr", Identity: id, Client: cs.CoordinationV1(), Shards: shards,
			LeaseDuration: fast.L, RenewDeadline: fast.D, RetryPeriod: fast.P, ReleaseOnCancel: true,
		})
		if err != nil {
			t.Fatal(err)
		}
		c := mgr.GetClient()
		r := reconcile.Func(func(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
			sh, ok := shardOf[req.Name]
			if !ok {
				return reconcile.Result{}, nil
			}
			if !slices.Contains(s.Member().Owned(), sh) {
				// Owned here when the Sharder let the request through;
				// if the shard has moved since, ctx is being cancelled.
				select {
				case <-ctx.Done():
				case <-time.After(time.Second):
					failf("%s reconciled %s of shard %d, owning %v", id, req.Name, sh, s.Member().Owned())
				}
			}
			mu.Lock()
			if o, busy := active[sh]; busy && o != id {
				bad = append(bad, fmt.Sprintf("%s reconciled shard %d while %s did", id, sh, o))
			}
			active[sh] = id
			mu.Unlock()
			var cm corev1.ConfigMap
			err := c.Get(ctx, req.NamespacedName, &cm)
			time.Sleep(2 * time.Millisecond) // a reconcile takes time: overlaps would show
			mu.Lock()
			delete(active, sh)
			reconciled[req.Name] = append(reconciled[req.Name], rec{by: id, at: time.Now(), gone: apierrors.IsNotFound(err)})
			mu.Unlock()
			return reconcile.Result{}, client.IgnoreNotFound(err)
		})
		// A Secret's event enqueues every ConfigMap, as a watch of
		// another type (Owns, Watches) enqueues objects of any shard:
		// Reconciler must filter those requests.
		everyConfigMap := handler.EnqueueRequestsFromMapFunc(func(context.Context, client.Object) []reconcile.Request {
			reqs := make([]reconcile.Request, len(cms))
			for i := range cms {
				reqs[i].NamespacedName = client.ObjectKeyFromObject(&cms[i])
			}
			return reqs
		})
		// The name is unique in the process, for -count.
		if err := ctrl.NewControllerManagedBy(mgr).Named(ns+"-"+id).
			For(&corev1.ConfigMap{}, builder.WithPredicates(s.Predicate())).
			Watches(&corev1.Secret{}, everyConfigMap).
			WatchesRawSource(s.Source()).
			Complete(s.Reconciler(r)); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		rp := &replica{s: s, cancel: cancel, done: make(chan error, 1)}
		go func() { rp.done <- mgr.Start(ctx) }()
		t.Cleanup(func() {
			cancel()
			select {
			case err := <-rp.done:
				rp.done <- err
			case <-time.After(30 * time.Second):
				t.Errorf("%s: manager did not stop", id)
			}
		})
		return rp
	}
	// reconciledBy reports whether every ConfigMap of the shards (all if
	// nil) was last reconciled by id, after since.
	reconciledBy := func(id string, since time.Time, shards []int) bool {
		mu.Lock()
		defer mu.Unlock()
		for _, cm := range cms {
			if shards != nil && !slices.Contains(shards, shardOf[cm.Name]) {
				continue
			}
			rs := reconciled[cm.Name]
			if len(rs) == 0 {
				return false
			}
			if last := rs[len(rs)-1]; last.by != id || last.at.Before(since) {
				return false
			}
		}
		return true
	}

	// phase waits until cond holds, and fails at once, saying why, if the
	// reconciler saw what it must not.
	phase := func(what string, cond func() bool) time.Duration {
		t.Helper()
		took := poll.Eventually(t, 20*time.Second, what, func() bool {
			mu.Lock()
			n := len(bad)
			mu.Unlock()
			return n > 0 || cond()
		})
		mu.Lock()
		defer mu.Unlock()
		if len(bad) > 0 {
			t.Fatalf("%s: reconciler saw objects of shards not owned here, or one shard in two replicas: %v", what, bad)
		}
		return took
	}

	began := time.Now()
	a := start("a")
	b := start("b")
	took := phase("shards split 2/2, every ConfigMap reconciled by the replica owning its shard", func() bool {
		aShards, bShards := a.s.Owned(), b.s.Owned()
		return len(aShards) == 2 && len(bShards) == 2 &&
			reconciledBy("a", began, aShards) && reconciledBy("b", began, bShards)
	})
	t.Logf("start: a %v, b %v, all 40 ConfigMaps reconciled %v after the managers started", a.s.Owned(), b.s.Owned(), took.Round(time.Millisecond))

	touched := time.Now()
	if _, err := admin.CoreV1().Secrets(ns).Create(context.Background(), &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "touch"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	took = phase("every ConfigMap reconciled again, by its shard's owner, after a Secret enqueued all of them in both replicas", func() bool {
		return reconciledBy("a", touched, a.s.Owned()) && reconciledBy("b", touched, b.s.Owned())
	})
	t.Logf("secondary watch: a Secret enqueued all 40 ConfigMaps in a and b; each reconciled by its shard's owner only, %v after", took.Round(time.Millisecond))

	bShards := b.s.Owned()
	left := time.Now()
	b.cancel()
	if err := <-b.done; err != nil {
		t.Fatalf("b's manager: %v", err)
	}
	b.done <- nil
	took = phase("a reconciled every ConfigMap of b's shards after b left", func() bool {
		return len(a.s.Owned()) == shards && reconciledBy("a", left, bShards)
	})
	t.Logf("leave: b's shards %v run in a, their ConfigMaps reconciled by a %v after b's manager was stopped", bShards, took.Round(time.Millisecond))

	joined := time.Now()
	c := start("c")
	took = phase("c runs 2 shards and reconciled their ConfigMaps", func() bool {
		cShards := c.s.Owned()
		return len(cShards) == 2 && len(a.s.Owned()) == 2 && reconciledBy("c", joined, cShards)
	})
	t.Logf("join: c runs %v, their ConfigMaps reconciled by c %v after it started", c.s.Owned(), took.Round(time.Millisecond))

	victim := cms[0]
	owner := "a"
	if slices.Contains(c.s.Owned(), shardOf[victim.Name]) {
		owner = "c"
	}
	if err := admin.CoreV1().ConfigMaps(ns).Delete(context.Background(), victim.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	phase("the deletion of "+victim.Name+" reconciled by "+owner, func() bool {
		mu.Lock()
		defer mu.Unlock()
		rs := reconciled[victim.Name]
		return len(rs) > 0 && rs[len(rs)-1].gone && rs[len(rs)-1].by == owner
	})

	mu.Lock()
	defer mu.Unlock()
	if len(bad) > 0 {
		t.Errorf("reconciler saw objects of shards not owned here, or one shard in two replicas: %v", bad)
	}
	n := 0
	for _, rs := range reconciled {
		n += len(rs)
	}
	t.Logf("3 replicas over time, 4 shards, 40 ConfigMaps, %d reconciles: each by the owner of its shard; the deletion of %s reached %s", n, victim.Name, owner)
}

type rec struct {
	by   string
	at   time.Time
	gone bool // the object was deleted
}
