package integration

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"

	"github.com/leasehold/leasehold"
	"github.com/leasehold/leasehold/test/testkit"
)

// std is the timing of most of these tests.
var std = testkit.Fast

// newNamespace creates a namespace for one test, deleted when it ends.
func newNamespace(t *testing.T) string { return testkit.Namespace(t, admin, "lh") }

// clientFor builds a clientset as the README recommends (request timeout
// from the renew deadline), recording its requests in rec if not nil.
func clientFor(cfg *rest.Config, d time.Duration, rec *testkit.Wire) kubernetes.Interface {
	cfg = leasehold.WithRequestTimeout(testkit.JSON(cfg), d)
	if rec != nil {
		cfg = rec.Wrap(cfg)
	}
	return kubernetes.NewForConfigOrDie(cfg)
}

// candidate is one leasehold elector running in a goroutine.
type candidate struct {
	id  string
	el  *leasehold.Elector
	rec *testkit.Wire

	*testkit.Background // Run

	mu      sync.Mutex
	leaders []string // OnNewLeader calls, in order
	starts  int
	stops   int
	workCtx context.Context
}

type candidateOpts struct {
	id, ns, name string
	t            testkit.Timing
	cfg          *rest.Config // default: admin
	release      bool
	tr           *testkit.Tracker
	logs         *testkit.Logs
	// rec records the client's requests; a new one if nil.
	rec *testkit.Wire
	// noTimeout builds the client without leasehold.WithRequestTimeout.
	noTimeout bool
	// gate, if set, delays Run until it is closed.
	gate <-chan struct{}
	// windDown is how long the work takes to return after its ctx is
	// cancelled, like a controller finishing its current item. Default:
	// it returns at once.
	windDown time.Duration
	// rejoin sets Config.Rejoin.
	rejoin bool
}

// startCandidate starts an elector whose work registers with o.tr and runs
// until its ctx is cancelled. Run is stopped and awaited when the test ends.
func startCandidate(t *testing.T, o candidateOpts) *candidate {
	t.Helper()
	cfg := o.cfg
	if cfg == nil {
		cfg = cp.Config()
	}
	c := &candidate{id: o.id, rec: o.rec}
	if c.rec == nil {
		c.rec = &testkit.Wire{}
	}
	var cs kubernetes.Interface
	if o.noTimeout {
		cs = kubernetes.NewForConfigOrDie(c.rec.Wrap(cfg))
	} else {
		cs = clientFor(cfg, o.t.D, c.rec)
	}
	el, err := leasehold.New(leasehold.Config{
		Lock: &leasehold.LeaseLock{
			Namespace: o.ns, Name: o.name, Identity: o.id,
			Client: cs.CoordinationV1(),
		},
		LeaseDuration:   o.t.L,
		RenewDeadline:   o.t.D,
		RetryPeriod:     o.t.P,
		ReleaseOnCancel: o.release,
		Rejoin:          o.rejoin,
		Callbacks: leasehold.Callbacks{
			OnStartedLeading: func(ctx context.Context) {
				c.mu.Lock()
				c.starts++
				c.workCtx = ctx
				c.mu.Unlock()
				exit := o.tr.Enter(o.id, nil)
				defer exit()
				<-ctx.Done()
				time.Sleep(o.windDown)
			},
			OnStoppedLeading: func() {
				c.mu.Lock()
				c.stops++
				c.mu.Unlock()
			},
			OnNewLeader: func(id string) {
				c.mu.Lock()
				c.leaders = append(c.leaders, id)
				c.mu.Unlock()
			},
		},
	})
	if err != nil {
		t.Fatalf("leasehold.New(%s): %v", o.id, err)
	}
	c.el = el
	log := logr.Discard()
	if o.logs != nil {
		log = o.logs.Logger(o.id)
	}
	c.Background = testkit.Go(t, klog.NewContext(context.Background(), log), o.id, 15*time.Second, func(ctx context.Context) error {
		if o.gate != nil {
			<-o.gate
		}
		return el.Run(ctx)
	})
	return c
}

// stop cancels Run and waits for it to return.
func (c *candidate) stop(t *testing.T) error {
	t.Helper()
	return c.Stop(t, 10*time.Second)
}

func (c *candidate) seenLeaders() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.leaders...)
}

func (c *candidate) stopCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stops
}

func (c *candidate) startCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.starts
}

// waitSees waits until the candidate's OnNewLeader reported id.
func (c *candidate) waitSees(t *testing.T, id string, within time.Duration) {
	t.Helper()
	testkit.Eventually(t, within, fmt.Sprintf("%s to observe leader %s", c.id, id), func() bool {
		for _, l := range c.seenLeaders() {
			if l == id {
				return true
			}
		}
		return false
	})
}

// checkReleaseHandoff checks a takeover after a release without a
// real-clock threshold that a loaded 2-core machine could break: lat, from
// the release being sent to the new leader's start, is under L - P, so the
// takeover cannot have come from expiry (the old leader renewed at most P
// before its release, and nobody takes over sooner than L after the last
// renewal it saw); and the new leader's client (taker) made no GET or LIST
// since `since`: it learned of the release on its watch, not by polling.
// The handoff's actual milliseconds are measured by make bench.
func checkReleaseHandoff(t *testing.T, what string, lat time.Duration, tm testkit.Timing, taker *testkit.Wire, since time.Time) {
	t.Helper()
	if lat < 0 || lat >= tm.L-tm.P {
		t.Errorf("%s: took over %v after the release was sent, want [0, L-P = %v): a takeover by expiry, not by the release", what, lat, tm.L-tm.P)
	}
	if n := taker.Count("get", since, nil) + taker.Count("list", since, nil); n != 0 {
		t.Errorf("%s: the new leader read the Lease %d times since %s; want none: the release reaches it on its watch", what, n, since.Format("15:04:05.000"))
	}
}

// rawClaim writes the Lease as holder id with a plain clientset, the way
// another elector would: a GET, then an Update conditioned on the version
// read (or a Create if there is none). It returns the Lease written.
func rawClaim(ctx context.Context, ns, name, id string, leaseSeconds int32) (*coordinationv1.Lease, error) {
	leases := admin.CoordinationV1().Leases(ns)
	now := metav1.NewMicroTime(time.Now())
	cur, err := leases.Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return leases.Create(ctx, &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec: coordinationv1.LeaseSpec{
				HolderIdentity:       ptr.To(id),
				LeaseDurationSeconds: ptr.To(leaseSeconds),
				AcquireTime:          &now,
				RenewTime:            &now,
				LeaseTransitions:     ptr.To[int32](0),
			},
		}, metav1.CreateOptions{})
	}
	if err != nil {
		return nil, err
	}
	next := cur.DeepCopy()
	if testkit.Holder(cur) != id {
		next.Spec.AcquireTime = &now
		next.Spec.LeaseTransitions = ptr.To(ptr.Deref(cur.Spec.LeaseTransitions, 0) + 1)
	}
	next.Spec.HolderIdentity = ptr.To(id)
	next.Spec.LeaseDurationSeconds = ptr.To(leaseSeconds)
	next.Spec.RenewTime = &now
	return leases.Update(ctx, next, metav1.UpdateOptions{})
}

// holderLog watches a Lease as admin and records the holder of every
// version, to check afterwards who held it and in which order.
type holderLog struct {
	mu       sync.Mutex
	versions []leaseVersion
}

type leaseVersion struct {
	rv, holder string
	at         time.Time
}

func watchHolders(t *testing.T, ns, name string) *holderLog {
	t.Helper()
	h := &holderLog{}
	ctx, cancel := context.WithCancel(context.Background())
	w, err := admin.CoordinationV1().Leases(ns).Watch(ctx, metav1.ListOptions{FieldSelector: "metadata.name=" + name})
	if err != nil {
		t.Fatalf("watch lease: %v", err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev := range w.ResultChan() {
			if l, ok := ev.Object.(*coordinationv1.Lease); ok {
				h.mu.Lock()
				h.versions = append(h.versions, leaseVersion{rv: l.ResourceVersion, holder: testkit.Holder(l), at: time.Now()})
				h.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() { cancel(); w.Stop(); <-done })
	return h
}

func (h *holderLog) snapshot() []leaseVersion {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]leaseVersion(nil), h.versions...)
}

func (h *holderLog) holders() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for _, v := range h.versions {
		out = append(out, v.holder)
	}
	return out
}

func isForbidden(err error) bool { return apierrors.IsForbidden(err) }
