package sharding

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/leasehold/leasehold"
	"github.com/leasehold/leasehold/examples/sharded-controller/crshard"
	"github.com/leasehold/leasehold/shard"
)

// A controller-runtime controller sharded with crshard, two replicas (two
// managers) on the real control plane: the reconciler sees only objects
// of shards owned by its replica, never one shard in two replicas at
// once, every object is reconciled, and when a replica leaves, the objects
// of the shards the other acquires are reconciled there.
func TestControllerRuntimeShardedController(t *testing.T) {
	const shards = 4
	ns := newNamespace(t)
	cms := createConfigMaps(t, admin, ns, "cm", 40)
	shardOf := map[string]int{}
	for i := range cms {
		shardOf[cms[i].Name], _ = shard.Of(&cms[i], shard.FieldUID, shards)
	}

	var mu sync.Mutex
	active := map[int]string{}       // shard -> replica reconciling it now
	reconciled := map[string][]rec{} // name -> reconciles
	var bad []string

	type replica struct {
		s      *crshard.Sharder
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
		c := mgr.GetClient()
		s, err := crshard.New(mgr, shard.Config{
			Namespace: ns, Group: "cr", Identity: id, Client: cs.CoordinationV1(), Shards: shards,
			LeaseDuration: fast.L, RenewDeadline: fast.D, RetryPeriod: fast.P, ReleaseOnCancel: true,
		}, shard.FieldUID, &corev1.ConfigMap{}, func(ctx context.Context) ([]client.Object, error) {
			var list corev1.ConfigMapList
			if err := c.List(ctx, &list, client.InNamespace(ns)); err != nil {
				return nil, err
			}
			out := make([]client.Object, len(list.Items))
			for i := range list.Items {
				out[i] = &list.Items[i]
			}
			return out, nil
		})
		if err != nil {
			t.Fatal(err)
		}
		var sharder *crshard.Sharder = s
		r := reconcile.Func(func(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
			sh, ok := shardOf[req.Name]
			if !ok {
				return reconcile.Result{}, nil
			}
			if !slices.Contains(sharder.Owned(), sh) {
				// The shard may have moved just now: then ctx is
				// cancelled (at once, by the shard's end).
				time.Sleep(10 * time.Millisecond)
				if ctx.Err() == nil {
					mu.Lock()
					bad = append(bad, fmt.Sprintf("%s reconciled %s of shard %d, owning %v", id, req.Name, sh, sharder.Owned()))
					mu.Unlock()
				}
			}
			mu.Lock()
			if o, busy := active[sh]; busy && o != id {
				bad = append(bad, fmt.Sprintf("%s reconciled shard %d while %s did", id, sh, o))
			}
			active[sh] = id
			reconciled[req.Name] = append(reconciled[req.Name], rec{id, time.Now()})
			mu.Unlock()
			time.Sleep(2 * time.Millisecond)
			mu.Lock()
			delete(active, sh)
			mu.Unlock()
			return reconcile.Result{}, nil
		})
		if err := ctrl.NewControllerManagedBy(mgr).Named("cm-" + id).For(&corev1.ConfigMap{}).
			WithEventFilter(s.Predicate()).WatchesRawSource(s.Source()).Complete(s.Reconciler(r)); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		rp := &replica{s: s, cancel: cancel, done: make(chan error, 1)}
		go func() { rp.done <- mgr.Start(ctx) }()
		t.Cleanup(func() {
			cancel()
			select {
			case <-rp.done:
			case <-time.After(30 * time.Second):
				t.Errorf("%s: manager did not stop", id)
			}
		})
		return rp
	}
	a := start("a")
	b := start("b")
	eventually(t, 20*time.Second, "every ConfigMap reconciled by the replica owning its shard, shards split 2/2", func() bool {
		if len(a.s.Owned()) != 2 || len(b.s.Owned()) != 2 {
			return false
		}
		mu.Lock()
		defer mu.Unlock()
		for _, cm := range cms {
			if len(reconciled[cm.Name]) == 0 {
				return false
			}
		}
		return true
	})
	bShards := b.s.Owned()
	left := time.Now()
	b.cancel()
	if err := <-b.done; err != nil {
		t.Fatalf("b's manager: %v", err)
	}
	b.done <- nil
	eventually(t, 20*time.Second, "a reconciled every ConfigMap of b's shards after b left", func() bool {
		if len(a.s.Owned()) != shards {
			return false
		}
		mu.Lock()
		defer mu.Unlock()
		for _, cm := range cms {
			if !slices.Contains(bShards, shardOf[cm.Name]) {
				continue
			}
			rs := reconciled[cm.Name]
			if last := rs[len(rs)-1]; last.by != "a" || last.at.Before(left) {
				return false
			}
		}
		return true
	})
	mu.Lock()
	defer mu.Unlock()
	if len(bad) > 0 {
		t.Errorf("reconciler saw objects of shards not owned here: %v", bad)
	}
	t.Logf("2 replicas, 4 shards, 40 ConfigMaps: each reconciled only by the owner of its shard; b's shards %v reconciled by a after b left", bShards)
}

type rec struct {
	by string
	at time.Time
}
