// Package crshard runs a controller-runtime controller sharded with
// leasehold's shard package: every replica reconciles the objects of the
// shards it owns, and only those.
//
// The manager runs with LeaderElection: false on every replica. A Sharder,
// added to the manager as a runnable, is the replica's shard.Member. Wire
// the controller through it:
//
//	s, _ := crshard.New(mgr, shard.Config{Namespace: ns, Group: "cm-controller", Identity: id,
//		Client: clientset.CoordinationV1(), Shards: 16, ReleaseOnCancel: true},
//		shard.FieldUID, &corev1.ConfigMap{}, func(ctx context.Context) ([]client.Object, error) { ... list ... })
//	_ = ctrl.NewControllerManagedBy(mgr).For(&corev1.ConfigMap{}).
//		WithEventFilter(s.Predicate()).   // events of owned shards only
//		WatchesRawSource(s.Source()).     // a shard acquired here: all its objects
//		Complete(s.Reconciler(r))         // runs only while the shard is owned here
//
// The guarantees: the reconciler is called only for objects whose shard
// this replica owns at that moment; a shard's handover waits until its
// in-flight reconciles have returned (their ctx is cancelled when the
// shard moves), so two replicas never reconcile objects of one shard at
// once; and when a shard arrives, every object of it is enqueued, so
// objects whose events went to the previous owner are reconciled here.
//
// The manager's cache holds every object (controller-runtime's cache
// cannot set a KEP-5866 shard selector); for server-side filtering use
// per-shard informers, as examples/sharded-controller does.
package crshard

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/leasehold/leasehold/shard"
)

// ListFunc lists every object the controller reconciles (typically from
// the manager's cached client). It is called when a shard arrives.
type ListFunc func(ctx context.Context) ([]client.Object, error)

// Sharder is one replica's membership of a shard group, as a manager
// runnable, with the predicate, source and reconciler wrapper that confine
// a controller to the shards owned here.
type Sharder struct {
	member *shard.Member
	field  string
	shards int
	proto  client.Object
	reader client.Reader
	list   ListFunc
	cache  interface {
		WaitForCacheSync(ctx context.Context) bool
	}
	events chan event.GenericEvent

	mu       sync.Mutex
	owned    map[int]context.Context // shard -> its ctx, while owned here
	inflight map[int]int
	idle     *sync.Cond
}

// New makes a Sharder for the objects of proto's type, sharded by field
// (shard.FieldUID or shard.FieldNamespace), and adds it to mgr. cfg is
// the group's configuration; OnShardStarted and OnShardStopped must be
// unset: the Sharder provides them.
func New(mgr manager.Manager, cfg shard.Config, field string, proto client.Object, list ListFunc) (*Sharder, error) {
	if cfg.OnShardStarted != nil || cfg.OnShardStopped != nil {
		return nil, errors.New("crshard: leave shard.Config.OnShardStarted and OnShardStopped unset: the Sharder runs the shards")
	}
	if proto == nil || list == nil {
		return nil, errors.New("crshard: proto (the reconciled type, e.g. &corev1.ConfigMap{}) and list are required")
	}
	if field != shard.FieldUID && field != shard.FieldNamespace {
		return nil, fmt.Errorf("crshard: field %q: use shard.FieldUID or shard.FieldNamespace", field)
	}
	s := &Sharder{
		field: field, shards: cfg.Shards, proto: proto, reader: mgr.GetClient(), list: list, cache: mgr.GetCache(),
		events: make(chan event.GenericEvent), owned: map[int]context.Context{}, inflight: map[int]int{},
	}
	s.idle = sync.NewCond(&s.mu)
	cfg.OnShardStarted = s.runShard
	m, err := shard.New(cfg)
	if err != nil {
		return nil, err
	}
	s.member = m
	if err := mgr.Add(s); err != nil {
		return nil, err
	}
	return s, nil
}

// Member returns the replica's shard.Member (Owned, Check).
func (s *Sharder) Member() *shard.Member { return s.member }

// Start runs the membership until ctx ends; the manager calls it.
func (s *Sharder) Start(ctx context.Context) error { return s.member.Run(ctx) }

// NeedLeaderElection is false: every replica is a member.
func (s *Sharder) NeedLeaderElection() bool { return false }

// owns reports whether obj's shard is owned here now, and which it is.
func (s *Sharder) owns(obj client.Object) (int, bool) {
	i, err := shard.Of(obj, s.field, s.shards)
	if err != nil {
		return 0, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.owned[i]
	return i, ok
}

// Predicate keeps the events of objects whose shard is owned here.
func (s *Sharder) Predicate() predicate.Predicate {
	return predicate.NewPredicateFuncs(func(obj client.Object) bool {
		_, ok := s.owns(obj)
		return ok
	})
}

// Source enqueues every object of a shard when it starts running here.
func (s *Sharder) Source() source.Source {
	return source.Channel(s.events, &handler.EnqueueRequestForObject{})
}

// Reconciler wraps r: a request is passed on only while its object's
// shard is owned here, with a ctx that is cancelled when the shard moves
// away; the shard is handed over only after the call returned.
func (s *Sharder) Reconciler(r reconcile.Reconciler) reconcile.Reconciler {
	return reconcile.Func(func(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
		obj := reflect.New(reflect.TypeOf(s.proto).Elem()).Interface().(client.Object)
		if err := s.reader.Get(ctx, req.NamespacedName, obj); err != nil {
			if apierrors.IsNotFound(err) {
				return reconcile.Result{}, nil // gone: no shard to check it against
			}
			return reconcile.Result{}, err
		}
		i, err := shard.Of(obj, s.field, s.shards)
		if err != nil {
			return reconcile.Result{}, err
		}
		s.mu.Lock()
		shardCtx, ok := s.owned[i]
		if ok {
			s.inflight[i]++
		}
		s.mu.Unlock()
		if !ok {
			return reconcile.Result{}, nil // another replica's
		}
		defer func() {
			s.mu.Lock()
			s.inflight[i]--
			s.idle.Broadcast()
			s.mu.Unlock()
		}()
		rctx, cancel := context.WithCancel(ctx)
		defer cancel()
		defer context.AfterFunc(shardCtx, cancel)()
		return r.Reconcile(rctx, req)
	})
}

// Owned returns the shards owned here now.
func (s *Sharder) Owned() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]int, 0, len(s.owned))
	for i := range s.owned {
		out = append(out, i)
	}
	slices.Sort(out)
	return out
}

// runShard is OnShardStarted: own shard i, enqueue its objects, and on
// the shard's end wait for its in-flight reconciles.
func (s *Sharder) runShard(ctx context.Context, i int) {
	s.mu.Lock()
	s.owned[i] = ctx
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.owned, i)
		for s.inflight[i] > 0 {
			s.idle.Wait()
		}
		s.mu.Unlock()
	}()
	if !s.cache.WaitForCacheSync(ctx) {
		return
	}
	var objs []client.Object
	for {
		var err error
		if objs, err = s.list(ctx); err == nil {
			break
		}
		klog.FromContext(ctx).Error(err, "Cannot list the objects of an acquired shard; retrying", "shard", i)
		select {
		case <-time.After(time.Second):
		case <-ctx.Done():
			return
		}
	}
	for _, o := range objs {
		if j, err := shard.Of(o, s.field, s.shards); err != nil || j != i {
			continue
		}
		select {
		case s.events <- event.GenericEvent{Object: o}:
		case <-ctx.Done():
			return
		}
	}
	<-ctx.Done()
}
