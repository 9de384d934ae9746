package sharding

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/leasehold/leasehold/shard"
	"github.com/leasehold/leasehold/test/controlplane"
	"github.com/leasehold/leasehold/test/testkit"
)

// createConfigMaps creates n ConfigMaps in ns and returns them as created
// (with their UIDs).
func createConfigMaps(t *testing.T, cs kubernetes.Interface, ns, prefix string, n int) []corev1.ConfigMap {
	t.Helper()
	out := make([]corev1.ConfigMap, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	sem := make(chan struct{}, 16)
	for i := 0; i < n; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func(i int) {
			defer wg.Done()
			defer func() { <-sem }()
			cm, err := cs.CoreV1().ConfigMaps(ns).Create(context.Background(), &corev1.ConfigMap{
				ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s-%04d", prefix, i)},
				Data:       map[string]string{"i": fmt.Sprint(i)},
			}, metav1.CreateOptions{})
			if err != nil {
				errs <- err
				return
			}
			out[i] = *cm
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("create ConfigMap: %v", err)
	}
	return out
}

func listFunc(cs kubernetes.Interface, ns string) shard.ListFunc {
	return func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
		return cs.CoreV1().ConfigMaps(ns).List(ctx, o)
	}
}

// With the ShardedListAndWatch gate, the API server's own filtering agrees
// with Of and Selector: for K = 3, 8 and 64, listing each shard's
// selector returns exactly the objects Of puts in that shard, and a merged
// selector of a random set of shards exactly their union. The library
// detects the gate.
func TestServerFilteringAgreesWithOf(t *testing.T) {
	ns := newNamespace(t)
	cms := createConfigMaps(t, admin, ns, "cm", 600)
	ctx := context.Background()

	on, err := shard.ServerFiltersShards(ctx, listFunc(admin, ns))
	if err != nil || !on {
		t.Fatalf("ServerFiltersShards on a server with the gate = %v, %v; want true", on, err)
	}
	rng := rand.New(rand.NewPCG(5, 6))
	for _, k := range []int{3, 8, 64} {
		want := map[int][]string{}
		for i := range cms {
			s, err := shard.Of(&cms[i], shard.FieldUID, k)
			if err != nil {
				t.Fatal(err)
			}
			want[s] = append(want[s], cms[i].Name)
		}
		check := func(sel string, wantNames []string) {
			t.Helper()
			list, err := admin.CoreV1().ConfigMaps(ns).List(ctx, metav1.ListOptions{ShardSelector: sel})
			if err != nil {
				t.Fatalf("list with shardSelector %s: %v", sel, err)
			}
			if list.ShardInfo == nil || list.ShardInfo.Selector == "" {
				t.Errorf("list with a shard selector has no shardInfo: the gate is not on")
			}
			var got []string
			for _, cm := range list.Items {
				got = append(got, cm.Name)
			}
			slices.Sort(got)
			slices.Sort(wantNames)
			if !slices.Equal(got, wantNames) {
				t.Fatalf("K=%d selector %s: server returned %d objects, Of says %d", k, sel, len(got), len(wantNames))
			}
		}
		for s := 0; s < k; s++ {
			check(shard.Selector(shard.FieldUID, k, s).String(), slices.Clone(want[s]))
		}
		var union []string
		var owned []int
		for s := 0; s < k; s++ {
			if rng.IntN(2) == 0 {
				owned = append(owned, s)
				union = append(union, want[s]...)
			}
		}
		check(shard.Selector(shard.FieldUID, k, owned...).String(), union)
		t.Logf("K=%d: %d per-shard lists and one merged list of %d shards agree with Of on %d ConfigMaps", k, k, len(owned), len(cms))
	}
	// The selector of no shard is refused, never taken for "everything".
	if _, err := admin.CoreV1().ConfigMaps(ns).List(ctx, metav1.ListOptions{ShardSelector: shard.Selector(shard.FieldUID, 8).String()}); err == nil {
		t.Error("the selector of no shard was accepted by the server")
	}
}

// A sharded controller: each member runs an informer per shard it owns,
// with TweakListOptions setting ShardSelector; the informer lives exactly
// as long as the shard's ctx. With the gate, every object an informer
// receives belongs to its shard (no client-side filter at all), every
// object of the shard is received, including ones created later, and
// after a member leaves the shards' new owners receive their objects.
func TestPerShardInformersSeeOnlyTheirShard(t *testing.T) {
	const k = 4
	ns := newNamespace(t)
	tr := newTracker()
	logs := testkit.NewLogs(t, 2)
	initial := createConfigMaps(t, admin, ns, "early", 120)

	var mu sync.Mutex
	seen := map[int]map[string]bool{} // shard -> names its informers received
	foreign := []string{}
	informersRunning := 0
	work := func(member string) func(ctx context.Context, s int) {
		return func(ctx context.Context, s int) {
			sel := shard.Selector(shard.FieldUID, k, s)
			f := informers.NewSharedInformerFactoryWithOptions(admin, 0, informers.WithNamespace(ns),
				informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.ShardSelector = sel.String() }))
			inf := f.Core().V1().ConfigMaps().Informer()
			_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: func(obj any) {
				cm := obj.(*corev1.ConfigMap)
				got, _ := shard.Of(cm, shard.FieldUID, k)
				mu.Lock()
				defer mu.Unlock()
				if got != s {
					foreign = append(foreign, fmt.Sprintf("%s (shard %d) in shard %d's informer", cm.Name, got, s))
				}
				if seen[s] == nil {
					seen[s] = map[string]bool{}
				}
				seen[s][cm.Name] = true
			}})
			mu.Lock()
			informersRunning++
			mu.Unlock()
			f.Start(ctx.Done())
			<-ctx.Done()
			f.Shutdown() // waits for the informer's goroutines
			mu.Lock()
			informersRunning--
			mu.Unlock()
		}
	}
	opts := func(id string) memberOpts {
		return memberOpts{id: id, ns: ns, group: "ctl", shards: k, t: fast, release: true, tr: tr, logs: logs, work: work(id)}
	}
	a := startMember(t, opts("a"))
	b := startMember(t, opts("b"))
	poll.Eventually(t, 10*time.Second, "balanced", func() bool { return balancedOver(tr, k, "a", "b") })
	later := createConfigMaps(t, admin, ns, "late", 80)
	all := append(slices.Clone(initial), later...)

	complete := func() bool {
		mu.Lock()
		defer mu.Unlock()
		for i := range all {
			s, _ := shard.Of(&all[i], shard.FieldUID, k)
			if !seen[s][all[i].Name] {
				return false
			}
		}
		return true
	}
	poll.Eventually(t, 20*time.Second, "every ConfigMap received by its shard's informer", complete)

	// b leaves: its informers stop before its shards move, and a's new
	// informers receive b's shards' objects.
	bShards := tr.owners()["b"]
	mu.Lock()
	seen = map[int]map[string]bool{}
	mu.Unlock()
	if err := b.stop(t); err != nil {
		t.Fatal(err)
	}
	poll.Eventually(t, 5*time.Second, "a owns all shards", func() bool { return balancedOver(tr, k, "a") })
	poll.Eventually(t, 20*time.Second, "a's informers received every ConfigMap of b's shards", func() bool {
		mu.Lock()
		defer mu.Unlock()
		for i := range all {
			s, _ := shard.Of(&all[i], shard.FieldUID, k)
			if slices.Contains(bShards, s) && !seen[s][all[i].Name] {
				return false
			}
		}
		return true
	})
	mu.Lock()
	if informersRunning != k {
		t.Errorf("%d informers running, want %d (one per shard, b's stopped with their shards)", informersRunning, k)
	}
	if len(foreign) > 0 {
		t.Errorf("server-side filtering let through %d objects of other shards: %v", len(foreign), foreign[:min(5, len(foreign))])
	}
	mu.Unlock()
	_ = a
	tr.check(t)
}

// Without the gate the server ignores a shard selector and sends every
// object: ServerFiltersShards detects it, and Selector(...).Matches gives
// each shard its objects on the client.
func TestGateAbsenceIsDetectedAndClientSideFilteringAgrees(t *testing.T) {
	plain, err := controlplane.Start() // no feature gate
	if err != nil {
		t.Fatalf("start a control plane without the gate: %v", err)
	}
	defer func() { _ = plain.Stop() }()
	cs := kubernetes.NewForConfigOrDie(plain.Config())
	ctx := context.Background()
	const ns = "default"
	cms := createConfigMaps(t, cs, ns, "cm", 200)

	on, err := shard.ServerFiltersShards(ctx, listFunc(cs, ns))
	if err != nil || on {
		t.Fatalf("ServerFiltersShards without the gate = %v, %v; want false", on, err)
	}
	const k = 8
	sel := shard.Selector(shard.FieldUID, k, 2)
	list, err := cs.CoreV1().ConfigMaps(ns).List(ctx, metav1.ListOptions{ShardSelector: sel.String()})
	if err != nil {
		t.Fatal(err)
	}
	if list.ShardInfo != nil {
		t.Errorf("shardInfo set by a server without the gate")
	}
	mine := 0
	for i := range list.Items {
		if m, _ := sel.Matches(&list.Items[i]); m {
			mine++
		}
	}
	want := 0
	for i := range cms {
		if s, _ := shard.Of(&cms[i], shard.FieldUID, k); s == 2 {
			want++
		}
	}
	// kube-root-ca.crt is in every namespace too.
	if len(list.Items) < len(cms) || mine != want {
		t.Fatalf("without the gate: server sent %d objects (want all %d+), client-side filter kept %d (Of says %d)", len(list.Items), len(cms), mine, want)
	}
	t.Logf("without the gate: the server sent all %d ConfigMaps for one shard's selector; Selector.Matches kept the %d of shard 2, as Of says", len(list.Items), mine)
}
