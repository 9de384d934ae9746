package controllerruntime

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"math/bits"
	"slices"
	"sync"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	"github.com/leasehold/leasehold/shard"
)

// FieldNamespacedName shards a Sharder's objects by namespace and name:
// shard = nameShard("namespace/name", K) ("/name" for a cluster-scoped
// object), a 64-bit FNV-1a hash of the key, mixed by MurmurHash3's
// finalizer so that names alike (pod-0, pod-1, ...) spread as evenly as
// random UIDs, and mapped onto the K shards in equal ranges. The function
// is fixed: every replica, of any release, computes the same shard. The
// shard of a request is known from the request alone, whatever the
// replica's cache holds: an object deleted and re-created under the same
// name stays in its shard, and one NamespacedName is never reconciled by
// two replicas at once.
//
// It is a Sharder's key, not a field the shard package or KEP-5866 knows:
// pass it to NewSharder only. Changing the field of a running group moves
// every object to another shard: switch to a new shard.Config.Group, or
// stop every replica of the old field before starting the new ones.
const FieldNamespacedName = "namespace/name"

// Sharder confines one controller to the shards of a shard group that
// this replica owns: it is the replica's shard.Member, run by the manager
// on every replica, and it supplies the three pieces that wire a
// controller to it (see the package documentation, "Sharded
// controllers"):
//
//   - Predicate: drops the events of objects of shards owned elsewhere;
//   - Source: when a shard starts here, enqueues every object of it;
//   - Reconciler: calls the reconciler only while the request's shard is
//     owned here, with a context cancelled when the shard moves away, and
//     holds the shard's handover until the call returned.
//
// A Sharder serves one controller. Its methods are safe for concurrent use.
type Sharder struct {
	member *shard.Member
	obj    client.Object // prototype of the reconciled type
	gvk    schema.GroupVersionKind
	list   client.ObjectList
	field  string
	shards int
	reader client.Reader
	clock  clock.Clock
	events chan event.GenericEvent

	mu       sync.Mutex
	owned    map[int]context.Context // shard -> its context, while it runs here
	inflight map[int]int             // shard -> reconciles running now
	drained  *sync.Cond              // signalled when a reconcile returns
	stop     context.CancelCauseFunc // ends Start's membership; nil outside Start
	failed   error                   // the permanent failure that ended the Sharder
}

// NewSharder builds the Sharder of a controller that reconciles objects of
// obj's type (the object passed to the builder's For, such as
// &corev1.ConfigMap{}, or an unstructured.Unstructured or
// metav1.PartialObjectMetadata with its GroupVersionKind set), sharded by
// field, and adds it to mgr, whose Start runs the membership. Call it
// before mgr.Start; mgr runs with LeaderElection: false, on every replica.
//
// field is FieldNamespacedName (an even spread) or shard.FieldNamespace
// (each namespace in one shard, by KEP-5866's hash of the namespace, as
// shard.Of computes it). shard.FieldUID is refused: a reconcile
// request names an object, not a UID, and an object deleted and
// re-created under the same name gets a new UID, so two replicas whose
// caches hold different UIDs for that name would both reconcile it at
// once.
//
// cfg configures the membership as for shard.New. The Sharder runs the
// shards: cfg.OnShardStarted must be nil. cfg.OnShardStopped, if set, is
// called after the shard's in-flight reconciles have returned, before the
// shard is handed over. Use ReleaseOnCancel: true to hand the shards over
// in milliseconds when the manager stops.
//
// The Sharder reads objects through mgr.GetClient(), normally the
// manager's cache, which must hold obj's type.
func NewSharder(mgr manager.Manager, obj client.Object, field string, cfg shard.Config) (*Sharder, error) {
	if mgr == nil {
		return nil, errors.New("leasehold/controllerruntime: the manager is nil")
	}
	s, err := newSharder(mgr.GetClient(), mgr.GetScheme(), obj, field, cfg)
	if err != nil {
		return nil, err
	}
	if err := mgr.Add(s); err != nil {
		return nil, err
	}
	return s, nil
}

// newSharder is NewSharder without a manager: reader reads the objects,
// scheme names obj's list type.
func newSharder(reader client.Reader, scheme *runtime.Scheme, obj client.Object, field string, cfg shard.Config) (*Sharder, error) {
	if obj == nil {
		return nil, errors.New("leasehold/controllerruntime: NewSharder needs the reconciled type's object, such as &corev1.ConfigMap{}")
	}
	switch field {
	case FieldNamespacedName, shard.FieldNamespace:
	case shard.FieldUID:
		return nil, fmt.Errorf("leasehold/controllerruntime: NewSharder: shard field %q is refused: an object deleted and re-created under the same name "+
			"gets a new UID, hence another shard, and two replicas whose caches hold different UIDs for the name would reconcile it at once; "+
			"use controllerruntime.FieldNamespacedName (%q), which spreads as evenly, or shard.FieldNamespace", field, FieldNamespacedName)
	default:
		return nil, fmt.Errorf("leasehold/controllerruntime: NewSharder: shard field %q: use controllerruntime.FieldNamespacedName (%q) or shard.FieldNamespace (%q)",
			field, FieldNamespacedName, shard.FieldNamespace)
	}
	if cfg.OnShardStarted != nil {
		return nil, errors.New("leasehold/controllerruntime: leave shard.Config.OnShardStarted nil: the Sharder runs the shards")
	}
	list, gvk, err := listFor(obj, scheme)
	if err != nil {
		return nil, err
	}
	s := &Sharder{
		obj: obj, gvk: gvk, list: list, field: field, shards: cfg.Shards, reader: reader, clock: clock.RealClock{},
		events: make(chan event.GenericEvent),
		owned:  map[int]context.Context{}, inflight: map[int]int{},
	}
	if cfg.Clock != nil {
		s.clock = cfg.Clock
	}
	s.drained = sync.NewCond(&s.mu)
	cfg.OnShardStarted = s.runShard
	if s.member, err = shard.New(cfg); err != nil {
		return nil, err
	}
	return s, nil
}

// listFor returns an empty list of obj's type, from scheme, and obj's
// GroupVersionKind.
func listFor(obj client.Object, scheme *runtime.Scheme) (client.ObjectList, schema.GroupVersionKind, error) {
	gvk, err := apiutil.GVKForObject(obj, scheme)
	if err != nil {
		return nil, gvk, fmt.Errorf("leasehold/controllerruntime: the reconciled type: %w", err)
	}
	listGVK := gvk
	listGVK.Kind += "List"
	switch obj.(type) {
	case *unstructured.Unstructured:
		l := &unstructured.UnstructuredList{}
		l.SetGroupVersionKind(listGVK)
		return l, gvk, nil
	case *metav1.PartialObjectMetadata:
		l := &metav1.PartialObjectMetadataList{}
		l.SetGroupVersionKind(listGVK)
		return l, gvk, nil
	}
	o, err := scheme.New(listGVK)
	if err != nil {
		return nil, gvk, fmt.Errorf("leasehold/controllerruntime: the reconciled type's list: %w", err)
	}
	l, ok := o.(client.ObjectList)
	if !ok {
		return nil, gvk, fmt.Errorf("leasehold/controllerruntime: %s is not a list type", listGVK)
	}
	return l, gvk, nil
}

// Member returns the replica's membership of the shard group: Owned,
// and Check for a liveness probe.
func (s *Sharder) Member() *shard.Member { return s.member }

// Start runs the membership until ctx ends, then hands the shards over
// (with ReleaseOnCancel) after their reconciles returned. The manager
// calls it; it returns an error, which stops the manager, if the
// membership fails, or if the list of an acquired shard's objects fails
// for good (RBAC forbids it, the type is not served or not in the
// scheme): the Sharder then leaves the group, and the error wraps the
// list's and names the fix. A transient list failure is retried with a
// backoff instead (see runShard).
func (s *Sharder) Start(ctx context.Context) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	s.mu.Lock()
	s.stop = cancel
	s.mu.Unlock()
	err := s.member.Run(ctx)
	s.mu.Lock()
	s.stop = nil
	failed := s.failed
	s.mu.Unlock()
	return errors.Join(failed, err)
}

// fail ends the Sharder with err: Start's membership is cancelled (the
// shards are handed over) and Start returns err.
func (s *Sharder) fail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failed == nil {
		s.failed = err
	}
	if s.stop != nil {
		s.stop(err)
	}
}

// NeedLeaderElection returns false: the Sharder runs on every replica.
func (s *Sharder) NeedLeaderElection() bool { return false }

// Owned returns, in ascending order, the shards whose objects this
// replica reconciles now.
func (s *Sharder) Owned() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]int, 0, len(s.owned))
	for i, ctx := range s.owned {
		if ctx.Err() == nil {
			out = append(out, i)
		}
	}
	slices.Sort(out)
	return out
}

// Predicate keeps the events of objects whose shard is owned here. Pass it
// to the builder's For (builder.WithPredicates), not WithEventFilter: the
// objects of other watches (Owns, Watches) have shards of their own,
// unrelated to their owner's; their requests are filtered by Reconciler.
func (s *Sharder) Predicate() predicate.Predicate {
	return predicate.Funcs{
		CreateFunc:  func(e event.CreateEvent) bool { return s.ownsObject(e.Object) },
		UpdateFunc:  func(e event.UpdateEvent) bool { return s.ownsObject(e.ObjectNew) },
		DeleteFunc:  func(e event.DeleteEvent) bool { return s.ownsObject(e.Object) },
		GenericFunc: func(e event.GenericEvent) bool { return s.ownsObject(e.Object) },
	}
}

// ownsObject reports whether obj's shard runs here now.
func (s *Sharder) ownsObject(obj client.Object) bool {
	if obj == nil {
		return false
	}
	i, err := s.shardOf(client.ObjectKeyFromObject(obj))
	if err != nil {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.runningLocked(i)
}

// shardOf returns the shard of the object named key: a function of key
// alone, the same on every replica.
func (s *Sharder) shardOf(key types.NamespacedName) (int, error) {
	return ShardOf(key, s.field, s.shards)
}

// nameShard is FieldNamespacedName's shard of key among shards (> 0): the
// 64-bit FNV-1a hash of key, through MurmurHash3's fmix64 (FNV-1a alone
// barely moves its high bits for keys that differ in their last bytes, so
// that names alike would crowd into one or two shards), scaled onto
// [0, shards). Do not change it: replicas must agree on it across releases.
func nameShard(key string, shards int) int {
	h := fnv.New64a()
	_, _ = h.Write([]byte(key))
	x := h.Sum64()
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	x *= 0xc4ceb9fe1a85ec53
	x ^= x >> 33
	hi, _ := bits.Mul64(x, uint64(shards))
	return int(hi)
}

// runningLocked reports whether shard i runs here and has not been
// cancelled. s.mu is held.
func (s *Sharder) runningLocked(i int) bool {
	ctx, ok := s.owned[i]
	return ok && ctx.Err() == nil
}
