package shard_test

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"

	"github.com/leasehold/leasehold"
	"github.com/leasehold/leasehold/shard"
)

// Three replicas of a controller share the ConfigMaps of namespace "apps":
// each lists and watches the ConfigMaps of the shards it owns, asking the
// API server for that shard's objects only where it can, for exactly as
// long as the shard stays here. examples/sharded-controller does the same
// with an informer per shard (informers.WithTweakListOptions).
func Example() {
	restConfig, err := rest.InClusterConfig()
	if err != nil {
		klog.Fatal(err)
	}
	cs := kubernetes.NewForConfigOrDie(leasehold.WithRequestTimeout(restConfig, 0))
	id, _ := leasehold.DefaultIdentity()
	ctx := context.Background()
	const shards = 16

	// Does the server filter by shard (feature gate ShardedListAndWatch)?
	serverSide, err := shard.ServerFiltersShards(ctx, func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
		return cs.CoreV1().ConfigMaps("apps").List(ctx, o)
	})
	if err != nil {
		klog.Fatal(err)
	}

	m, err := shard.New(shard.Config{
		Namespace:       "my-system",
		Group:           "configmap-syncer",
		Identity:        id,
		Client:          cs.CoordinationV1(),
		Shards:          shards,
		ReleaseOnCancel: true,
		OnShardStarted: func(ctx context.Context, i int) {
			sel := shard.Selector(shard.FieldUID, shards, i)
			opts := metav1.ListOptions{}
			if serverSide {
				opts.ShardSelector = sel.String()
			}
			w, err := cs.CoreV1().ConfigMaps("apps").Watch(ctx, opts) // ends with ctx
			if err != nil {
				return // restarted after RetryPeriod while the shard is ours
			}
			defer w.Stop()
			for ev := range w.ResultChan() {
				cm, ok := ev.Object.(*corev1.ConfigMap)
				if match, _ := sel.Matches(cm); ok && match { // without the gate, the server sends all
					fmt.Println("reconcile", cm.Name)
				}
			}
		},
	})
	if err != nil {
		klog.Fatal(err)
	}
	if err := m.Run(ctx); err != nil {
		klog.Fatal(err)
	}
}

// Of names an object's shard; Selector is the KEP-5866 selector of a set
// of shards, for ListOptions.ShardSelector or for filtering on the client.
func ExampleSelector() {
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "settings", UID: "9b1d5b7e-6a43-4a4e-9bd6-2f1f3a6f0c11"}}
	i, _ := shard.Of(cm, shard.FieldUID, 4)
	fmt.Println("shard", i)
	sel := shard.Selector(shard.FieldUID, 4, 0, 1, 3)
	fmt.Println(sel.String())
	ok, _ := sel.Matches(cm)
	fmt.Println("matches:", ok)
	// Output:
	// shard 1
	// shardRange(object.metadata.uid, '0x0000000000000000', '0x8000000000000000') || shardRange(object.metadata.uid, '0xc000000000000000', '0x10000000000000000')
	// matches: true
}
