package controllerruntime

import (
	"context"
	"errors"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	crcache "sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/leasehold/leasehold/internal/retry"
	"github.com/leasehold/leasehold/shard"
)

// Running one shard of a Sharder: its cache-less source of events and
// its reconciler, started when the member is assigned the shard and
// stopped when it loses it, with list failures classified.

// listRetry and listRetryMax bound how long a Sharder waits before
// listing an acquired shard's objects again after a transient failure: the
// wait starts at listRetry and doubles, up to listRetryMax.
const (
	listRetry    = time.Second
	listRetryMax = 30 * time.Second
)

// Source enqueues every object of a shard when the shard starts here,
// including objects whose events went to the shard's previous owner. Add
// it to the controller with the builder's WatchesRawSource, once.
func (s *Sharder) Source() source.Source {
	return source.Channel(s.events, &handler.EnqueueRequestForObject{})
}

// Reconciler wraps r, the controller's reconciler. A request reaches r
// only while its shard runs here, with a context that is also cancelled
// when the shard moves away; the shard is handed over only after every
// such call returned, so two replicas never reconcile objects of one shard
// at once. The shard of a request is a function of its NamespacedName
// alone (see FieldNamespacedName): nothing is read, a deleted object's
// request reaches its shard's owner whether or not the deletion was seen
// there, and one name is never reconciled by two replicas at once.
//
// An error or requeue that r returns after the shard moved away is
// dropped: the new owner reconciles the object.
func (s *Sharder) Reconciler(r reconcile.Reconciler) reconcile.Reconciler {
	return reconcile.Func(func(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
		i, err := s.shardOf(req.NamespacedName)
		if err != nil {
			return reconcile.Result{}, fmt.Errorf("leasehold/controllerruntime: the shard of %s: %w", req.NamespacedName, err)
		}
		s.mu.Lock()
		shardCtx, owned := s.owned[i]
		if !owned || shardCtx.Err() != nil {
			s.mu.Unlock()
			return reconcile.Result{}, nil // another replica's, or moving there
		}
		s.inflight[i]++
		s.mu.Unlock()
		defer func() {
			s.mu.Lock()
			s.inflight[i]--
			s.drained.Broadcast()
			s.mu.Unlock()
		}()
		rctx, cancel := context.WithCancel(ctx)
		defer cancel()
		defer context.AfterFunc(shardCtx, cancel)()
		res, err := r.Reconcile(rctx, req)
		if shardCtx.Err() != nil {
			if err != nil {
				klog.FromContext(ctx).V(2).Info("Shard moved away during the reconcile; its new owner reconciles the object", "shard", i, "err", err)
			}
			return reconcile.Result{}, nil
		}
		return res, err
	})
}

// runShard is the member's OnShardStarted: shard i runs here until ctx
// ends. It enqueues the shard's objects, and when ctx ends waits for the
// shard's in-flight reconciles to return.
//
// The list of the shard's objects is retried, after a transient failure
// (the server unavailable or throttling, a timeout, the cache not started
// yet), with a backoff from listRetry doubling up to listRetryMax. A
// permanent failure (see listFailure) is not retried: it ends the Sharder
// (fail).
func (s *Sharder) runShard(ctx context.Context, i int) {
	s.mu.Lock()
	if s.failed != nil {
		s.mu.Unlock()
		return // the Sharder is leaving the group
	}
	s.owned[i] = ctx
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		// ctx has ended: Reconciler admits no more calls for shard i.
		for s.inflight[i] > 0 {
			s.drained.Wait()
		}
		delete(s.owned, i)
		delete(s.inflight, i)
	}()
	log := klog.FromContext(ctx).WithValues("shard", i, "kind", s.gvk.String())
	var objs []runtime.Object
	bo := retry.NewBackoff(s.clock, listRetry, listRetryMax)
	failures := retry.NewStreak(s.clock, log, "Cannot list the objects of a shard acquired here; retrying with backoff")
	for {
		list := s.list.DeepCopyObject().(client.ObjectList)
		err := s.reader.List(ctx, list)
		if err == nil {
			if objs, err = meta.ExtractList(list); err == nil {
				break
			}
			err = fmt.Errorf("%w: %w", errUnreadableList, err)
		}
		if ctx.Err() != nil {
			return // moved away while listing: the error is the cancel's
		}
		if fix, permanent := listFailure(err); permanent {
			err = fmt.Errorf("leasehold/controllerruntime: Sharder: list %s for shard %d: %w; %s", s.gvk, i, err, fix)
			log.Error(err, "Cannot list the objects of a shard acquired here, for good; leaving the shard group")
			s.fail(err)
			return
		}
		failures.Failed(err)
		if !bo.Wait(ctx) {
			return
		}
	}
	failures.Succeeded()
	for _, o := range objs {
		obj, ok := o.(client.Object)
		if !ok {
			continue
		}
		if j, err := s.shardOf(client.ObjectKeyFromObject(obj)); err != nil || j != i {
			continue
		}
		if ctx.Err() != nil {
			return // moved away: select would pick a ready send half the time
		}
		select {
		case s.events <- event.GenericEvent{Object: obj}:
		case <-ctx.Done():
			return
		}
	}
	<-ctx.Done()
}

// errUnreadableList wraps the error of a list whose items cannot be read.
var errUnreadableList = errors.New("the list's items cannot be read")

// listFailure classifies a failed list of the reconciled type: permanent
// if retrying cannot help until someone changes the cluster or the
// program, with what to fix; transient otherwise (an unavailable or
// throttling server, a timeout, a refused connection, a cache not started
// yet, anything unknown).
func listFailure(err error) (fix string, permanent bool) {
	switch {
	case apierrors.IsForbidden(err), apierrors.IsUnauthorized(err):
		return "grant the manager's service account list and watch on this type (RBAC)", true
	case meta.IsNoMatchError(err), apierrors.IsNotFound(err), apierrors.IsMethodNotSupported(err):
		return "the API server does not serve this type: install its CustomResourceDefinition, or fix the object's GroupVersionKind", true
	case runtime.IsNotRegisteredError(err):
		return "add the type to the manager's scheme", true
	case errors.As(err, new(*crcache.ErrResourceNotCached)):
		return "the manager's cache does not hold this type: add it to cache.Options.ByObject, or drop the restriction", true
	case apierrors.IsBadRequest(err), apierrors.IsInvalid(err), apierrors.IsNotAcceptable(err), apierrors.IsUnsupportedMediaType(err),
		errors.Is(err, errUnreadableList):
		return "the request for this type is malformed: check the object passed to NewSharder", true
	}
	return "", false
}

// ShardOf returns the shard, among shards, that a Sharder sharding by
// field (FieldNamespacedName or shard.FieldNamespace) gives the object
// named key: what every replica computes for a request of key. With
// shard.ReadStatus, which names each shard's owner, it tells which replica
// reconciles an object.
func ShardOf(key types.NamespacedName, field string, shards int) (int, error) {
	if shards < 1 || shards > shard.MaxShards {
		return 0, fmt.Errorf("leasehold/controllerruntime: ShardOf: %d shards: want 1..%d, the group's shard.Config.Shards", shards, shard.MaxShards)
	}
	switch field {
	case FieldNamespacedName:
		return nameShard(key.String(), shards), nil
	case shard.FieldNamespace:
		return shard.Of(&metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace}}, shard.FieldNamespace, shards)
	}
	return 0, fmt.Errorf("leasehold/controllerruntime: ShardOf: field %q: a Sharder shards by controllerruntime.FieldNamespacedName (%q) or shard.FieldNamespace (%q)",
		field, FieldNamespacedName, shard.FieldNamespace)
}
