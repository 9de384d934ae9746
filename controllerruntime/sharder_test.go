package controllerruntime

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	clocktesting "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	crcache "sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/leasehold/leasehold/leaseholdtest"
	"github.com/leasehold/leasehold/shard"
)

const (
	shNS     = "work"
	shShards = 8
)

var shT0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// configMaps returns n ConfigMaps with UIDs, and each one's shard by
// FieldNamespacedName.
func configMaps(t *testing.T, n int) ([]client.Object, map[string]int) {
	t.Helper()
	objs := make([]client.Object, n)
	shardOf := map[string]int{}
	rnd := rand.New(rand.NewPCG(1, 2)) // UIDs as random as the API server's, the same every run
	for i := range objs {
		uid := fmt.Sprintf("%08x-%04x-%04x-%04x-%012x", rnd.Uint32(), rnd.Uint32()>>16, rnd.Uint32()>>16, rnd.Uint32()>>16, rnd.Uint64()>>16)
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: shNS, Name: fmt.Sprintf("cm-%02d", i), UID: types.UID(uid)}}
		objs[i], shardOf[cm.Name] = cm, nameShard(client.ObjectKeyFromObject(cm).String(), shShards)
	}
	return objs, shardOf
}

// newClock returns the fake clock that times a test's members. Call it
// inside the test's bubble.
func newClock() *clocktesting.FakeClock { return clocktesting.NewFakeClock(shT0) }

// advance moves clk forward by d in steps of at most 250ms, letting every
// goroutine of the bubble react before the first step and after each one,
// so that no renewal due on the way is skipped.
func advance(clk *clocktesting.FakeClock, d time.Duration) {
	settle()
	for d > 0 {
		step := min(d, 250*time.Millisecond)
		clk.Step(step)
		d -= step
		settle()
	}
}

// advanceUntil advances clk in steps of 250ms until cond holds, failing
// after limit.
func advanceUntil(t *testing.T, clk *clocktesting.FakeClock, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	settle()
	for waited := time.Duration(0); !cond(); waited += 250 * time.Millisecond {
		if waited >= limit {
			t.Fatalf("%s: not within %v of the members' clock", what, limit)
		}
		advance(clk, 250*time.Millisecond)
	}
}

// shConfig is a member's configuration on srv, timed by clk.
func shConfig(srv *leaseholdtest.Server, clk *clocktesting.FakeClock, id string) shard.Config {
	cfg := shard.Config{
		Namespace: "leases", Group: "cms", Identity: id, Client: srv.Client(id), Shards: shShards,
		LeaseDuration: 15 * time.Second, RenewDeadline: 10 * time.Second, RetryPeriod: 2 * time.Second,
		ReleaseOnCancel: true,
	}
	if clk != nil {
		cfg.Clock = clk
	}
	return cfg
}

// recorder is a reconciler that records the names it was called for.
type recorder struct {
	mu    sync.Mutex
	names []string
}

func (r *recorder) Reconcile(_ context.Context, req reconcile.Request) (reconcile.Result, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.names = append(r.names, req.Name)
	return reconcile.Result{}, nil
}

func (r *recorder) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.names
	r.names = nil
	sort.Strings(out)
	return out
}

// namesOfShards returns, sorted, the names of the objects of shards.
func namesOfShards(shardOf map[string]int, shards []int) []string {
	var out []string
	for name, s := range shardOf {
		if slices.Contains(shards, s) {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}

// receive takes n events from s's Source channel and returns their
// objects' names, sorted. It fails after wait, of the bubble's virtual
// time, which passes only when nothing else can happen: the events are
// sent as soon as a shard starts.
func receive(t *testing.T, s *Sharder, n int) []string {
	t.Helper()
	var out []string
	for len(out) < n {
		select {
		case e := <-s.events:
			out = append(out, e.Object.GetName())
		case <-time.After(wait):
			t.Fatalf("%d of %d enqueued objects received: %v", len(out), n, out)
		}
	}
	sort.Strings(out)
	return out
}

// reconcileAll passes a request for every object through s.Reconciler(r).
func reconcileAll(t *testing.T, s *Sharder, r reconcile.Reconciler, objs []client.Object) {
	t.Helper()
	wrapped := s.Reconciler(r)
	for _, o := range objs {
		if _, err := wrapped.Reconcile(context.Background(), reconcile.Request{NamespacedName: client.ObjectKeyFromObject(o)}); err != nil {
			t.Fatalf("reconcile %s: %v", o.GetName(), err)
		}
	}
}

type runningSharder struct {
	*Sharder
	cancel context.CancelFunc
	done   chan error
}

func startSharder(t *testing.T, reader client.Reader, cfg shard.Config) *runningSharder {
	t.Helper()
	s, err := newSharder(reader, clientgoscheme.Scheme, &corev1.ConfigMap{}, FieldNamespacedName, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return runSharder(t, s)
}

// runSharder runs s until the test ends.
func runSharder(t *testing.T, s *Sharder) *runningSharder {
	ctx, cancel := context.WithCancel(context.Background())
	rs := &runningSharder{Sharder: s, cancel: cancel, done: make(chan error, 1)}
	go func() { rs.done <- s.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		go func() {
			for range s.events { // unblock a shard still enqueueing
			}
		}()
		<-rs.done
		close(s.events)
	})
	return rs
}

// Two replicas on one shard group: each acquired shard's objects are all
// enqueued where it starts (a alone: every object; b joining: the objects
// of the shards it takes), each replica's reconciler sees only the objects
// of its own shards, and when b leaves, a is sent every object of the
// shards it takes over, and reconciles them.
func TestSharderConfinesTheReconcilerAndEnqueuesAcquiredShards(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		objs, shardOf := configMaps(t, 40)
		reader := fake.NewClientBuilder().WithObjects(objs...).Build()
		srv := leaseholdtest.NewServer()
		clk := newClock()
		a := startSharder(t, reader, shConfig(srv, clk, "a"))
		advanceUntil(t, clk, 10*time.Second, "a alone runs every shard", func() bool { return len(a.Owned()) == shShards })
		if got := receive(t, a.Sharder, len(objs)); len(slices.Compact(got)) != len(objs) {
			t.Errorf("a, running every shard, enqueued %v, want every object once", got)
		}
		b := startSharder(t, reader, shConfig(srv, clk, "b"))
		advanceUntil(t, clk, 10*time.Second, "a and b balanced", func() bool {
			return len(a.Owned()) == shShards/2 && len(b.Owned()) == shShards/2
		})
		bShards := b.Owned()
		if want, got := namesOfShards(shardOf, bShards), receive(t, b.Sharder, len(namesOfShards(shardOf, bShards))); !slices.Equal(got, want) {
			t.Errorf("b enqueued %v, want the objects of its shards %v: %v", got, bShards, want)
		}
		for _, m := range []*runningSharder{a, b} {
			var r recorder
			reconcileAll(t, m.Sharder, &r, objs)
			if got, want := r.take(), namesOfShards(shardOf, m.Owned()); !slices.Equal(got, want) {
				t.Errorf("reconciler called for %v, want only the objects of shards %v: %v", got, m.Owned(), want)
			}
			p := m.Predicate()
			for _, o := range objs {
				if got, want := p.Create(event.CreateEvent{Object: o}), slices.Contains(m.Owned(), shardOf[o.GetName()]); got != want {
					t.Errorf("Predicate.Create(%s of shard %d) = %v with shards %v", o.GetName(), shardOf[o.GetName()], got, m.Owned())
				}
			}
		}

		b.cancel()
		advanceUntil(t, clk, 10*time.Second, "a runs every shard after b left", func() bool { return len(a.Owned()) == shShards })
		if err := <-b.done; err != nil {
			t.Errorf("b: Start = %v", err)
		}
		b.done <- nil
		if want, got := namesOfShards(shardOf, bShards), receive(t, a.Sharder, len(namesOfShards(shardOf, bShards))); !slices.Equal(got, want) {
			t.Errorf("after b left, a enqueued %v, want the objects of b's shards %v: %v", got, bShards, want)
		}
		var r recorder
		reconcileAll(t, a.Sharder, &r, objs)
		if got := r.take(); len(got) != len(objs) {
			t.Errorf("after b left, a reconciled %d objects, want all %d", len(got), len(objs))
		}
	})
}

// A shard moves only after the reconciles running for it returned: the
// leaving replica's reconcile has its context cancelled at once, and the
// other replica starts the shard only once that reconcile returned. An
// error the reconcile returns after the move is dropped.
func TestSharderHandsAShardOverAfterItsReconcilesReturned(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		objs, shardOf := configMaps(t, 40)
		reader := fake.NewClientBuilder().WithObjects(objs...).Build()
		srv := leaseholdtest.NewServer()
		clk := newClock()
		a := startSharder(t, reader, shConfig(srv, clk, "a"))
		b := startSharder(t, reader, shConfig(srv, clk, "b"))
		go func() {
			for range a.events {
			}
		}()
		go func() {
			for range b.events {
			}
		}()
		advanceUntil(t, clk, 10*time.Second, "a and b balanced", func() bool {
			return len(a.Owned()) == shShards/2 && len(b.Owned()) == shShards/2
		})
		held, obj := -1, client.Object(nil)
		for _, o := range objs {
			if s := shardOf[o.GetName()]; slices.Contains(b.Owned(), s) {
				held, obj = s, o
				break
			}
		}
		if obj == nil {
			t.Fatalf("no object in b's shards %v", b.Owned())
		}
		entered, cancelled, release := make(chan struct{}), make(chan struct{}), make(chan struct{})
		result := make(chan error, 1)
		go func() {
			_, err := b.Reconciler(reconcile.Func(func(ctx context.Context, _ reconcile.Request) (reconcile.Result, error) {
				close(entered)
				<-ctx.Done()
				close(cancelled)
				<-release
				return reconcile.Result{}, ctx.Err()
			})).Reconcile(context.Background(), reconcile.Request{NamespacedName: client.ObjectKeyFromObject(obj)})
			result <- err
		}()
		settle()
		if !isClosed(entered) {
			t.Fatal("the reconcile of an object of b's shard did not start")
		}
		b.cancel()
		settle()
		if !isClosed(cancelled) {
			t.Fatal("b's leaving did not cancel the reconcile at once")
		}
		advance(clk, 5*time.Second)
		if slices.Contains(a.Owned(), held) {
			t.Fatalf("a runs shard %d while b's reconcile of %s has not returned", held, obj.GetName())
		}
		if got := len(a.Owned()); got != shShards-1 {
			t.Errorf("a runs %v: b's other shards should have moved at once", a.Owned())
		}
		close(release)
		if err := <-result; err != nil {
			t.Errorf("the reconcile's error after its shard moved was passed on: %v", err)
		}
		advanceUntil(t, clk, 2*time.Second, "a runs the held shard after b's reconcile returned", func() bool { return slices.Contains(a.Owned(), held) })
	})
}

// Without membership: requests of shards not running here never reach the
// reconciler; those of shards running here do, deleted objects' included,
// whether or not the deletion was seen here, and again on a second
// request: the shard of a request is its name's, nothing is read.
func TestSharderReconcilerFiltersRequests(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		objs, shardOf := configMaps(t, 20)
		reads := 0
		reader := fake.NewClientBuilder().WithObjects(objs[:10]...).WithInterceptorFuncs(interceptor.Funcs{ // objs[10:] are deleted
			Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
				reads++
				return c.Get(ctx, key, obj, opts...)
			},
		}).Build()
		srv := leaseholdtest.NewServer()
		s, err := newSharder(reader, clientgoscheme.Scheme, &corev1.ConfigMap{}, FieldNamespacedName, shConfig(srv, nil, "a"))
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			for range s.events {
			}
		}()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		mine := []int{shardOf[objs[0].GetName()], shardOf[objs[10].GetName()], shardOf[objs[11].GetName()]}
		for _, i := range slices.Compact(slices.Sorted(slices.Values(mine))) {
			go s.runShard(ctx, i)
		}
		settle()
		// objs[10]'s deletion is seen here (its event passes Predicate),
		// objs[11]'s is not: both requests reach the reconciler.
		if !s.Predicate().Delete(event.DeleteEvent{Object: objs[10]}) {
			t.Errorf("Predicate.Delete dropped the deletion of %s, of shard %d that runs here", objs[10].GetName(), shardOf[objs[10].GetName()])
		}
		var want []string
		for _, o := range objs {
			if slices.Contains(mine, shardOf[o.GetName()]) {
				want = append(want, o.GetName())
			}
		}
		sort.Strings(want)
		for range 2 {
			var r recorder
			reconcileAll(t, s, &r, objs)
			if got := r.take(); !slices.Equal(got, want) {
				t.Errorf("reconciled %v, want the objects of shards %v, deleted ones included: %v", got, mine, want)
			}
		}
		if reads != 0 {
			t.Errorf("the Sharder read %d objects to route requests, want none", reads)
		}
		cancel()
		settle() // every runShard has returned: nothing sends any more
		close(s.events)
	})
}

// listFailing is a reader whose List fails with the errors of errs, one
// per call, then succeeds; it records when (by clk) each List came.
type listFailing struct {
	clk  *clocktesting.FakeClock
	errs []error
	c    client.Reader

	mu    sync.Mutex
	calls []time.Time
}

func (l *listFailing) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	return l.c.Get(ctx, key, obj, opts...)
}

func (l *listFailing) List(ctx context.Context, list client.ObjectList, opts ...client.ListOption) error {
	l.mu.Lock()
	n := len(l.calls)
	l.calls = append(l.calls, l.clk.Now())
	l.mu.Unlock()
	if n < len(l.errs) {
		return l.errs[n]
	}
	return l.c.List(ctx, list, opts...)
}

func (l *listFailing) times() []time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.calls)
}

// A list of an acquired shard's objects that fails transiently (the
// server unavailable, throttled, timing out; the cache not started yet) is
// retried with a backoff that doubles from listRetry up to listRetryMax,
// and no object is enqueued before it succeeds.
func TestSharderRetriesATransientListFailureWithBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		objs, shardOf := configMaps(t, 20)
		clk := newClock()
		transient := []error{
			apierrors.NewServiceUnavailable("etcd leader changed"),
			apierrors.NewTooManyRequests("slow down", 1),
			apierrors.NewTimeoutError("list", 1),
			errors.New("dial tcp 10.0.0.1:443: connect: connection refused"),
			&crcache.ErrCacheNotStarted{},
			apierrors.NewInternalError(errors.New("boom")),
			apierrors.NewServiceUnavailable("again"),
			apierrors.NewServiceUnavailable("and again"),
		}
		reader := &listFailing{clk: clk, errs: transient, c: fake.NewClientBuilder().WithObjects(objs...).Build()}
		s, err := newSharder(reader, clientgoscheme.Scheme, &corev1.ConfigMap{}, FieldNamespacedName, shConfig(leaseholdtest.NewServer(), clk, "a"))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { s.runShard(ctx, 3); close(done) }()
		var want []time.Duration
		for d := listRetry; len(want) < len(transient); d = min(2*d, listRetryMax) {
			want = append(want, d)
		}
		// Each wait is the backoff's delay plus up to 20% jitter
		// (internal/retry): the clock moves in 10ms steps until the
		// next list, whose distance from the failure is then checked.
		for n, d := range want {
			settle()
			select {
			case e := <-s.events:
				t.Fatalf("%s enqueued before the list succeeded", e.Object.GetName())
			default:
			}
			if got := len(reader.times()); got != n+1 {
				t.Fatalf("%d lists after %d failures, want %d", got, n, n+1)
			}
			failedAt := clk.Now()
			for len(reader.times()) == n+1 && clk.Since(failedAt) <= d*6/5 {
				clk.Step(10 * time.Millisecond)
				settle()
			}
			if gap := reader.times()[n+1].Sub(failedAt); gap < d || gap > d*6/5+10*time.Millisecond {
				t.Fatalf("list %d came %v after failure %d (%v), want its backoff of %v (plus up to 20%% jitter)", n+2, gap, n+1, transient[n], d)
			}
		}
		if got, want := receive(t, s, len(namesOfShards(shardOf, []int{3}))), namesOfShards(shardOf, []int{3}); !slices.Equal(got, want) {
			t.Errorf("enqueued %v, want %v", got, want)
		}
		if want[len(want)-1] != listRetryMax || listRetryMax > time.Minute {
			t.Errorf("backoff %v, want it capped at listRetryMax (%v), at most a minute", want, listRetryMax)
		}
		cancel()
		<-done
		if got := s.Owned(); len(got) != 0 {
			t.Errorf("Owned = %v after the shard ended", got)
		}
	})
}

// A list that fails for good (RBAC forbids it, the type is not served)
// is not retried: the Sharder's Start returns an error that wraps the
// API error and says what to fix, and the member leaves the group.
func TestSharderEndsOnAPermanentListFailure(t *testing.T) {
	for name, tc := range map[string]struct {
		err  error
		is   func(error) bool
		want string
	}{
		"forbidden": {
			apierrors.NewForbidden(schema.GroupResource{Resource: "configmaps"}, "", errors.New("RBAC: no list")),
			apierrors.IsForbidden, "RBAC",
		},
		"not served": {
			&meta.NoKindMatchError{GroupKind: schema.GroupKind{Kind: "ConfigMap"}, SearchedVersions: []string{"v1"}},
			meta.IsNoMatchError, "does not serve",
		},
		"not cached": {
			&crcache.ErrResourceNotCached{},
			func(err error) bool { return errors.As(err, new(*crcache.ErrResourceNotCached)) }, "ByObject",
		},
	} {
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				clk := newClock()
				reader := &listFailing{clk: clk, errs: slices.Repeat([]error{tc.err}, 100), c: fake.NewClientBuilder().Build()}
				srv := leaseholdtest.NewServer()
				s, err := newSharder(reader, clientgoscheme.Scheme, &corev1.ConfigMap{}, FieldNamespacedName, shConfig(srv, clk, "a"))
				if err != nil {
					t.Fatal(err)
				}
				done := make(chan error, 1)
				go func() { done <- s.Start(context.Background()) }()
				var got error
				advanceUntil(t, clk, 10*time.Second, "Start to return", func() bool {
					select {
					case got = <-done:
						return true
					default:
						return false
					}
				})
				if !tc.is(got) || !strings.Contains(got.Error(), tc.want) || !strings.Contains(got.Error(), "ConfigMap") {
					t.Errorf("Start = %v, want the list's error wrapped, naming ConfigMap and %q", got, tc.want)
				}
				// Each shard this member started listed once, at the same
				// instant; none listed again after a backoff.
				calls := reader.times()
				if len(calls) == 0 || len(calls) > shShards {
					t.Errorf("%d lists, want one per shard started (at most %d)", len(calls), shShards)
				}
				for _, at := range calls {
					if !at.Equal(calls[0]) {
						t.Errorf("a list %v after the first: a permanent failure was retried", at.Sub(calls[0]))
						break
					}
				}
				if got := s.Owned(); len(got) != 0 {
					t.Errorf("Owned = %v after Start returned", got)
				}
			})
		})
	}
}

// Sharding by namespace needs no read: a request's namespace is its
// shard's.
func TestSharderByNamespaceReadsNothing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		reader := fake.NewClientBuilder().WithInterceptorFuncs(interceptor.Funcs{
			Get: func(context.Context, client.WithWatch, client.ObjectKey, client.Object, ...client.GetOption) error {
				return errors.New("read")
			},
		}).Build()
		s, err := newSharder(reader, clientgoscheme.Scheme, &corev1.ConfigMap{}, shard.FieldNamespace, shConfig(leaseholdtest.NewServer(), nil, "a"))
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			for range s.events {
			}
		}()
		i, _ := shard.Of(&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "team-0"}}, shard.FieldNamespace, shShards)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go s.runShard(ctx, i)
		settle()
		var r recorder
		w := s.Reconciler(&r)
		var want []string
		for n := range 16 {
			req := types.NamespacedName{Namespace: fmt.Sprintf("team-%d", n), Name: "x"}
			if j, _ := shard.Of(&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: req.Namespace}}, shard.FieldNamespace, shShards); j == i {
				want = append(want, req.Name)
			}
			if _, err := w.Reconcile(ctx, reconcile.Request{NamespacedName: req}); err != nil {
				t.Fatalf("%s: %v", req, err)
			}
		}
		if got := r.take(); len(got) != len(want) || len(want) == 0 {
			t.Errorf("%d requests reached the reconciler, want the %d of namespaces in shard %d", len(got), len(want), i)
		}
		cancel()
		settle() // every runShard has returned: nothing sends any more
		close(s.events)
	})
}

func TestNewSharderRefusesBadArguments(t *testing.T) {
	srv := leaseholdtest.NewServer()
	ok := shConfig(srv, nil, "a")
	started := ok
	started.OnShardStarted = func(context.Context, int) {}
	badShards := ok
	badShards.Shards = 0
	type unknown struct{ corev1.ConfigMap }
	for _, tc := range []struct {
		name  string
		obj   client.Object
		field string
		cfg   shard.Config
		want  string
	}{
		{"no object", nil, FieldNamespacedName, ok, "needs the reconciled type"},
		{"bad field", &corev1.ConfigMap{}, "metadata.name", ok, "controllerruntime.FieldNamespacedName"},
		{"FieldUID", &corev1.ConfigMap{}, shard.FieldUID, ok, "re-created under the same name"},
		{"OnShardStarted set", &corev1.ConfigMap{}, FieldNamespacedName, started, "OnShardStarted nil"},
		{"type not in the scheme", &unknown{}, FieldNamespacedName, ok, "the reconciled type"},
		{"bad shard config", &corev1.ConfigMap{}, FieldNamespacedName, badShards, "hards"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := newSharder(fake.NewClientBuilder().Build(), clientgoscheme.Scheme, tc.obj, tc.field, tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
	if _, err := NewSharder(nil, &corev1.ConfigMap{}, FieldNamespacedName, ok); err == nil {
		t.Error("a nil manager was accepted")
	}
}

// A Sharder and a Gate in one manager: the sharded controller, built with
// NeedLeaderElection false, runs on every replica beside the Gate, which
// starts and leads; built without it, the Gate's start check reports the
// controller as a leader-only runnable outside the gate, as the package
// documentation says.
func TestSharderBesideAGate(t *testing.T) {
	for _, everywhere := range []bool{true, false} {
		t.Run(fmt.Sprintf("NeedLeaderElection=%v", !everywhere), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				srv := leaseholdtest.NewServer()
				mgr := newManagerWith(t, &logLines{}, false)
				g, err := New(mgr, testConfig(srv, "a"))
				if err != nil {
					t.Fatal(err)
				}
				p := newProbe(srv)
				if err := g.Manager().Add(p); err != nil {
					t.Fatal(err)
				}
				s, err := NewSharder(mgr, &corev1.ConfigMap{}, FieldNamespacedName, shConfig(srv, nil, "s"))
				if err != nil {
					t.Fatal(err)
				}
				opts := controller.Options{}
				if everywhere {
					opts.NeedLeaderElection = ptr.To(false)
				}
				if err := builder.ControllerManagedBy(mgr).Named("sharded").WithOptions(opts).
					For(&corev1.ConfigMap{}, builder.WithPredicates(s.Predicate())).
					WatchesRawSource(s.Source()).
					Complete(s.Reconciler(nopReconciler())); err != nil {
					t.Fatal(err)
				}
				joined := make(chan struct{})
				var once sync.Once
				srv.AddHook(func(_ context.Context, req leaseholdtest.Request) error {
					if req.Client == "s" {
						once.Do(func() { close(joined) })
					}
					return nil
				})
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				done := startManager(ctx, mgr)
				if !everywhere {
					if err := result(t, done); !errors.Is(err, ErrUngatedRunnable) || !strings.Contains(err.Error(), `"sharded"`) {
						t.Fatalf("mgr.Start = %v, want ErrUngatedRunnable naming the sharded controller", err)
					}
					return
				}
				waitFor(t, p.started, "the gated runnable")
				waitFor(t, joined, "the Sharder's first request: the manager runs it")
				cancel()
				if err := result(t, done); err != nil {
					t.Fatalf("mgr.Start = %v", err)
				}
			})
		})
	}
}

// The list type of an acquired shard's objects comes from the scheme, or
// from the GroupVersionKind of an unstructured or metadata-only object.
func TestListFor(t *testing.T) {
	gvk := corev1.SchemeGroupVersion.WithKind("ConfigMap")
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(gvk)
	m := &metav1.PartialObjectMetadata{}
	m.SetGroupVersionKind(gvk)
	for _, tc := range []struct {
		obj  client.Object
		want string
	}{
		{&corev1.ConfigMap{}, "*v1.ConfigMapList"},
		{u, "*unstructured.UnstructuredList"},
		{m, "*v1.PartialObjectMetadataList"},
	} {
		l, _, err := listFor(tc.obj, clientgoscheme.Scheme)
		if err != nil {
			t.Errorf("%T: %v", tc.obj, err)
			continue
		}
		if got := fmt.Sprintf("%T", l); got != tc.want {
			t.Errorf("%T: list %s, want %s", tc.obj, got, tc.want)
		}
		if got := l.GetObjectKind().GroupVersionKind().Kind; tc.want != "*v1.ConfigMapList" && got != "ConfigMapList" {
			t.Errorf("%T: list kind %q, want ConfigMapList", tc.obj, got)
		}
	}
}

// uidIn returns a UID whose shard (by shard.FieldUID) is in shards.
func uidIn(t *testing.T, rnd *rand.Rand, shards []int) types.UID {
	t.Helper()
	for range 1000 {
		uid := types.UID(fmt.Sprintf("%08x-%04x-%04x-%04x-%012x", rnd.Uint32(), rnd.Uint32()>>16, rnd.Uint32()>>16, rnd.Uint32()>>16, rnd.Uint64()>>16))
		i, err := shard.Of(&metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{UID: uid}}, shard.FieldUID, shShards)
		if err != nil {
			t.Fatal(err)
		}
		if slices.Contains(shards, i) {
			return uid
		}
	}
	t.Fatalf("no UID in shards %v", shards)
	return ""
}

// An object deleted and re-created under the same name, while the two
// replicas' caches disagree: a's still holds the old object, whose UID is
// in one of a's shards, b's already the new one, whose UID is in one of
// b's. A request for that name, on both replicas at once, reaches exactly
// one reconciler: two replicas never reconcile one NamespacedName at once.
// (With shard.FieldUID, which NewSharder now refuses, both did.)
func TestSharderNeverReconcilesOneNameInTwoReplicas(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := leaseholdtest.NewServer()
		clk := newClock()
		field := FieldNamespacedName
		// Members first, on empty caches, to learn who owns what.
		readers := map[string]*nameSwitch{"a": {}, "b": {}}
		start := func(id string) *runningSharder {
			s, err := newSharder(readers[id], clientgoscheme.Scheme, &corev1.ConfigMap{}, field, shConfig(srv, clk, id))
			if err != nil {
				t.Fatal(err)
			}
			return runSharder(t, s)
		}
		a, b := start("a"), start("b")
		for _, m := range []*runningSharder{a, b} {
			go func() {
				for range m.events {
				}
			}()
		}
		advanceUntil(t, clk, 10*time.Second, "a and b balanced", func() bool {
			return len(a.Owned()) == shShards/2 && len(b.Owned()) == shShards/2
		})
		rnd := rand.New(rand.NewPCG(3, 4))
		name := types.NamespacedName{Namespace: shNS, Name: "reborn"}
		old := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: name.Namespace, Name: name.Name, UID: uidIn(t, rnd, a.Owned())}}
		reborn := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: name.Namespace, Name: name.Name, UID: uidIn(t, rnd, b.Owned())}}
		readers["a"].set(fake.NewClientBuilder().WithObjects(old).Build())
		readers["b"].set(fake.NewClientBuilder().WithObjects(reborn).Build())

		var mu sync.Mutex
		inside, most := 0, 0
		release := make(chan struct{})
		r := reconcile.Func(func(context.Context, reconcile.Request) (reconcile.Result, error) {
			mu.Lock()
			inside++
			most = max(most, inside)
			mu.Unlock()
			<-release
			mu.Lock()
			inside--
			mu.Unlock()
			return reconcile.Result{}, nil
		})
		var wg sync.WaitGroup
		for _, m := range []*runningSharder{a, b} {
			wg.Go(func() {
				if _, err := m.Reconciler(r).Reconcile(context.Background(), reconcile.Request{NamespacedName: name}); err != nil {
					t.Errorf("reconcile %s: %v", name, err)
				}
			})
		}
		settle()
		mu.Lock()
		n := inside
		mu.Unlock()
		close(release)
		wg.Wait()
		if n != 1 || most != 1 {
			t.Errorf("%d replicas reconcile %s at once (at most %d), want exactly one", n, name, most)
		}
	})
}

// nameSwitch is a client.Reader whose backing reader a test sets once the
// members run: each replica's own cache.
type nameSwitch struct {
	mu sync.Mutex
	r  client.Reader
}

func (n *nameSwitch) set(r client.Reader) { n.mu.Lock(); n.r = r; n.mu.Unlock() }

func (n *nameSwitch) reader() client.Reader {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.r == nil {
		return fake.NewClientBuilder().Build()
	}
	return n.r
}

func (n *nameSwitch) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	return n.reader().Get(ctx, key, obj, opts...)
}

func (n *nameSwitch) List(ctx context.Context, list client.ObjectList, opts ...client.ListOption) error {
	return n.reader().List(ctx, list, opts...)
}

// Names alike, as controllers see them (pod-0, pod-1, ...; cm-00, cm-01,
// ...), spread evenly over the shards by FieldNamespacedName: each of K
// shards gets its share of them, within a fifth of it, for several K.
// (KEP-5866's FNV-1a range split, which shard.Of applies to UIDs, put 40
// such names in 2 shards of 8.)
func TestNameShardSpreadsNamesAlike(t *testing.T) {
	for _, pattern := range []string{"work/cm-%02d", "default/pod-%d", "team-a/my-app-%d", "/node-%d"} {
		for _, k := range []int{2, 3, 8, 16} {
			const n = 4000
			counts := make([]int, k)
			for i := range n {
				j := nameShard(fmt.Sprintf(pattern, i), k)
				if j < 0 || j >= k {
					t.Fatalf("nameShard(%q, %d) = %d", fmt.Sprintf(pattern, i), k, j)
				}
				counts[j]++
			}
			share := n / k
			for j, c := range counts {
				if c < share*4/5 || c > share*6/5 {
					t.Errorf("%s over %d shards: %v; shard %d has %d, want %d within a fifth", pattern, k, counts, j, c, share)
					break
				}
			}
		}
	}
}

// nameShard is fixed: replicas of different releases must agree on every
// name's shard, or a rolling update would let two of them reconcile one
// name at once. These values pin it; they were computed independently of
// the Go code (FNV-1a 64, MurmurHash3 fmix64, then the high 64 bits of
// hash*K).
func TestNameShardIsStable(t *testing.T) {
	for key, want := range map[string][3]int{
		"work/cm-00":          {10, 1, 626},
		"default/pod-0":       {15, 2, 973},
		"/node-1":             {11, 2, 700},
		"kube-system/coredns": {14, 2, 905},
		"a/b":                 {15, 2, 947},
	} {
		for i, k := range []int{16, 3, 1000} {
			if got := nameShard(key, k); got != want[i] {
				t.Errorf("nameShard(%q, %d) = %d, want %d", key, k, got, want[i])
			}
		}
	}
}

// ShardOf is the Sharder's routing rule, exported: the Sharder reconciles
// here exactly the objects whose ShardOf runs here; it refuses what a
// Sharder refuses.
func TestShardOfIsTheSharders(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		objs, _ := configMaps(t, 40)
		for _, field := range []string{FieldNamespacedName, shard.FieldNamespace} {
			s, err := newSharder(fake.NewClientBuilder().Build(), clientgoscheme.Scheme, &corev1.ConfigMap{}, field, shConfig(leaseholdtest.NewServer(), nil, "a"))
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			go s.runShard(ctx, 5)
			settle()
			var want []string
			for _, o := range objs {
				i, err := ShardOf(client.ObjectKeyFromObject(o), field, shShards)
				if err != nil {
					t.Fatal(err)
				}
				if i == 5 {
					want = append(want, o.GetName())
				}
			}
			var r recorder
			reconcileAll(t, s, &r, objs)
			if got := r.take(); !slices.Equal(got, want) {
				t.Errorf("%s: shard 5 reconciled %v, want the objects whose ShardOf is 5: %v", field, got, want)
			}
			cancel()
			settle()
			close(s.events)
		}
	})
	key := types.NamespacedName{Namespace: "ns", Name: "x"}
	for _, bad := range []struct {
		field  string
		shards int
	}{{shard.FieldUID, 8}, {"metadata.name", 8}, {FieldNamespacedName, 0}, {FieldNamespacedName, shard.MaxShards + 1}} {
		if _, err := ShardOf(key, bad.field, bad.shards); err == nil {
			t.Errorf("ShardOf(%q, %d) succeeded", bad.field, bad.shards)
		}
	}
}
