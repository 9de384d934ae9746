package shard

import (
	"context"
	"fmt"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// ListFunc lists one resource, as a typed client's List does, e.g.
//
//	func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
//		return clientset.CoreV1().ConfigMaps(ns).List(ctx, o)
//	}
type ListFunc func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error)

// ServerFiltersShards reports whether the API server filters list and
// watch requests of the resource that list reads by a KEP-5866
// ShardSelector. It sends one list, limited to one object, with a
// selector of the whole hash space: a server with the ShardedListAndWatch
// feature gate echoes the selector in the list's metadata.shardInfo; one
// without the gate ignores the selector and sends every object, so the
// caller must then filter with Selector(...).Matches. The answer can
// differ per resource (an aggregated API server has its own gates), so ask
// for the resource you will list.
func ServerFiltersShards(ctx context.Context, list ListFunc) (bool, error) {
	obj, err := list(ctx, metav1.ListOptions{ShardSelector: Selector(FieldUID, 1, 0).String(), Limit: 1})
	if err != nil {
		return false, fmt.Errorf("shard: probe for server-side shard filtering: %w", err)
	}
	lm, err := meta.ListAccessor(obj)
	if err != nil {
		return false, fmt.Errorf("shard: probe for server-side shard filtering: %T is not a list: %w", obj, err)
	}
	si, ok := lm.(interface{ GetShardInfo() *metav1.ShardInfo })
	return ok && si.GetShardInfo() != nil, nil
}
