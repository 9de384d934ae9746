package shard

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/uuid"
)

// Of and Selector agree on 100,000 objects, for shard counts that divide
// 2^64 and ones that do not: each object matches exactly the selector of
// its shard, and the merged selector of a set of shards exactly when its
// shard is in the set.
func TestOfAndSelectorAgree(t *testing.T) {
	const objects = 100_000
	rng := rand.New(rand.NewPCG(1, 2))
	objs := make([]*corev1.ConfigMap, objects)
	for i := range objs {
		objs[i] = &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{
			Name: fmt.Sprintf("cm-%d", i), Namespace: fmt.Sprintf("ns-%d", i%97), UID: uuid.NewUUID(),
		}}
	}
	combos := []struct {
		k     int
		field string
	}{{1, FieldUID}, {3, FieldUID}, {8, FieldUID}, {32, FieldUID}, {1000, FieldUID}, {1024, FieldUID}, {7, FieldNamespace}, {128, FieldNamespace}}
	for _, c := range combos {
		k, field := c.k, c.field
		{
			sels := make([]interface {
				Matches(runtime.Object) (bool, error)
			}, k)
			for i := range sels {
				sels[i] = Selector(field, k, i)
			}
			// A random set of shards, merged into ranges.
			var set []int
			in := map[int]bool{}
			for i := 0; i < k; i++ {
				if rng.IntN(2) == 0 {
					set = append(set, i)
					in[i] = true
				}
			}
			merged := Selector(field, k, set...)
			perShard := make([]int, k)
			for n, o := range objs {
				s, err := Of(o, field, k)
				if err != nil {
					t.Fatal(err)
				}
				perShard[s]++
				// Checking all k selectors for all objects is slow at k=1024:
				// check the own shard and the merged set for every object,
				// the neighbours for every tenth.
				check := []int{s}
				if n%10 == 0 {
					check = append(check, s-1, s+1)
				}
				for _, j := range check {
					if j < 0 || j >= k {
						continue
					}
					ok, err := sels[j].Matches(o)
					if err != nil {
						t.Fatal(err)
					}
					if ok != (j == s) {
						t.Fatalf("k=%d %s: Of=%d but Selector(%d).Matches=%v for uid %s", k, field, s, j, ok, o.UID)
					}
				}
				if ok, _ := merged.Matches(o); ok != in[s] {
					t.Fatalf("k=%d %s: merged selector %s matches=%v for an object of shard %d", k, field, merged, ok, s)
				}
			}
			if field == FieldUID && k <= 32 {
				for s, n := range perShard {
					if want := objects / k; n < want*8/10 || n > want*12/10 {
						t.Errorf("k=%d: shard %d has %d of %d objects: the spread is uneven", k, s, n, objects)
					}
				}
			}
		}
	}
}

func TestSelectorRanges(t *testing.T) {
	if got, want := Selector(FieldUID, 4, 1).String(), "shardRange(object.metadata.uid, '0x4000000000000000', '0x8000000000000000')"; got != want {
		t.Errorf("Selector(4, 1) = %s, want %s", got, want)
	}
	// Adjacent shards merge; the last range ends at 2^64.
	if got, want := Selector(FieldUID, 4, 0, 2, 3).String(),
		"shardRange(object.metadata.uid, '0x0000000000000000', '0x4000000000000000') || shardRange(object.metadata.uid, '0x8000000000000000', '0x10000000000000000')"; got != want {
		t.Errorf("Selector(4, 0, 2, 3) = %s, want %s", got, want)
	}
	// 3 does not divide 2^64: bounds are ceilings, so boundary hashes
	// land in exactly one shard.
	for i := 0; i <= 3; i++ {
		t.Logf("start(%d of 3) = %s", i, rangeStart(i, 3))
	}
	for _, h := range []uint64{0x5555555555555555, 0x5555555555555556, 0xaaaaaaaaaaaaaaaa, 0xaaaaaaaaaaaaaaab, 1<<64 - 1} {
		s := shardOfHash(h, 3)
		hex := fmt.Sprintf("0x%016x", h)
		lo, hi := rangeStart(s, 3), rangeStart(s+1, 3)
		if !(lo <= hex && (len(hi) > len(hex) || hex < hi)) {
			t.Errorf("hash %s: shard %d, range [%s, %s)", hex, s, lo, hi)
		}
	}
	nothingSel := Selector(FieldUID, 4)
	if ok, _ := nothingSel.Matches(&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{UID: "x"}}); ok || nothingSel.Empty() || nothingSel.String() == "" {
		t.Errorf("selector of no shard: matches %v, empty %v, string %q; want a selector that matches nothing and is never sent as empty", ok, nothingSel.Empty(), nothingSel.String())
	}
}

func TestOfErrors(t *testing.T) {
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "a", Namespace: "ns"}}
	if _, err := Of(cm, FieldUID, 8); err == nil || !strings.Contains(err.Error(), "no metadata.uid") {
		t.Errorf("Of(object without uid) = %v, want an error naming metadata.uid", err)
	}
	if _, err := Of(cm, "object.metadata.name", 8); err == nil || !strings.Contains(err.Error(), "FieldUID") {
		t.Errorf("Of(unsupported field) = %v, want an error naming the supported fields", err)
	}
	if _, err := Of(cm, FieldNamespace, 0); err == nil {
		t.Error("Of(shards 0) succeeded")
	}
	for _, bad := range []func(){
		func() { Selector("metadata.uid", 8, 1) },
		func() { Selector(FieldUID, 8, 8) },
		func() { Selector(FieldUID, 2000, 1) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Error("Selector with bad arguments did not panic")
				}
			}()
			bad()
		}()
	}
}

func TestServerFiltersShards(t *testing.T) {
	withInfo := func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
		if o.ShardSelector == "" || o.Limit != 1 {
			t.Errorf("probe sent %+v, want a shard selector and limit 1", o)
		}
		return &corev1.ConfigMapList{ListMeta: metav1.ListMeta{ShardInfo: &metav1.ShardInfo{Selector: o.ShardSelector}}}, nil
	}
	without := func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
		return &corev1.ConfigMapList{Items: []corev1.ConfigMap{{ObjectMeta: metav1.ObjectMeta{UID: types.UID("u")}}}}, nil
	}
	if ok, err := ServerFiltersShards(context.Background(), withInfo); !ok || err != nil {
		t.Errorf("with shardInfo: %v, %v", ok, err)
	}
	if ok, err := ServerFiltersShards(context.Background(), without); ok || err != nil {
		t.Errorf("without shardInfo: %v, %v", ok, err)
	}
}
