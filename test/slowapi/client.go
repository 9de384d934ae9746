package slowapi

import (
	"context"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	coordinationv1client "k8s.io/client-go/kubernetes/typed/coordination/v1"

	"github.com/leasehold/leasehold/leaseholdtest"
	"github.com/leasehold/leasehold/test/internal/sleep"
)

// client is one process's LeasesGetter: leaseholdtest's, with the world's
// latency profile applied to every request. A non-zero timeout bounds
// every request, as rest.Config.Timeout does (controller-runtime's
// leader-election client).
type client struct {
	w       *world
	s       *slot
	id      string // the identity this process writes as holder
	inner   *leaseholdtest.Client
	timeout time.Duration
}

func (c *client) Leases(ns string) coordinationv1client.LeaseInterface {
	return &leases{LeaseInterface: c.inner.Leases(ns), c: c}
}

// leases overrides the verbs an election uses; the others (list, patch,
// apply, deletecollection) reach the server without latency.
type leases struct {
	coordinationv1client.LeaseInterface
	c *client
}

func (l *leases) Get(ctx context.Context, name string, opts metav1.GetOptions) (*coordinationv1.Lease, error) {
	var got *coordinationv1.Lease
	err := l.c.do(ctx, "get", false, "", func(ctx context.Context) error {
		var err error
		got, err = l.LeaseInterface.Get(ctx, name, opts)
		return err
	}, nil)
	return got, err
}

func (l *leases) Create(ctx context.Context, lease *coordinationv1.Lease, opts metav1.CreateOptions) (*coordinationv1.Lease, error) {
	var got *coordinationv1.Lease
	err := l.c.do(ctx, "create", true, holderOf(lease), func(ctx context.Context) error {
		var err error
		got, err = l.LeaseInterface.Create(ctx, lease, opts)
		return err
	}, nil)
	return got, err
}

func (l *leases) Update(ctx context.Context, lease *coordinationv1.Lease, opts metav1.UpdateOptions) (*coordinationv1.Lease, error) {
	var got *coordinationv1.Lease
	err := l.c.do(ctx, "update", true, holderOf(lease), func(ctx context.Context) error {
		var err error
		got, err = l.LeaseInterface.Update(ctx, lease, opts)
		return err
	}, nil)
	return got, err
}

func (l *leases) Delete(ctx context.Context, name string, opts metav1.DeleteOptions) error {
	return l.c.do(ctx, "delete", true, "", func(ctx context.Context) error {
		return l.LeaseInterface.Delete(ctx, name, opts)
	}, nil)
}

func (l *leases) Watch(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
	var inner watch.Interface
	err := l.c.do(ctx, "watch", false, "", func(context.Context) error {
		// Opened, the watch lives as long as the caller's ctx.
		var err error
		inner, err = l.LeaseInterface.Watch(ctx, opts)
		return err
	}, func() {
		if inner != nil {
			inner.Stop() // opened, but the caller gave up on the answer
		}
	})
	if err != nil {
		return nil, err
	}
	f := &heldWatch{w: l.c.w, inner: inner, out: make(chan watch.Event), stop: make(chan struct{})}
	go f.run()
	return f, nil
}

// do sends one request: it waits out the "before" half (or returns
// ctx.Err() and nothing lands), serves it on the server, which the
// request can no longer be taken back from, then waits out the "after"
// half (or returns ctx.Err(): a write landed, but the client does not
// know). holder is the holder a write names ("" for a release and for
// reads); a write naming this process that returns success is a renewal
// (or acquisition) of its term. abandon, if set, runs when the answer is
// lost after the request was served.
func (c *client) do(ctx context.Context, verb string, write bool, holder string, serve func(context.Context) error, abandon func()) error {
	w := c.w
	if c.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
		defer cancel()
	}
	sent := time.Now()
	lat := w.request(c.s, write)
	off := sent.Sub(w.start)
	stalls := w.stalls
	if !write && w.cfg.Profile.StallWritesOnly {
		stalls = nil
	}
	land := w.start.Add(stalls.advance(off, lat.before))
	answer := w.start.Add(stalls.advance(land.Sub(w.start), lat.after))
	if err := waitUntil(ctx, land); err != nil {
		w.timedOut(c.s)
		w.trace("%s: %s holder=%q gave up before landing (drawn %v+%v): %v", c.id, verb, holder, lat.before, lat.after, err)
		return err
	}
	err := serve(context.WithoutCancel(ctx))
	if werr := waitUntil(ctx, answer); werr != nil {
		if abandon != nil && err == nil {
			abandon()
		}
		w.timedOut(c.s)
		w.trace("%s: %s holder=%q landed (%v), answer lost (drawn %v+%v): %v", c.id, verb, holder, err, lat.before, lat.after, werr)
		return werr
	}
	w.trace("%s: %s holder=%q sent %v ago: %v", c.id, verb, holder, time.Since(sent).Round(time.Millisecond), err)
	if write && err == nil && holder == c.id {
		w.renewed(c.s, sent)
	}
	return err
}

// waitUntil waits until at, or returns ctx.Err() if ctx ends first.
func waitUntil(ctx context.Context, at time.Time) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	d := time.Until(at)
	if d <= 0 {
		return nil
	}
	return sleep.For(ctx, d)
}

// heldWatch forwards a watch's events at once, except during a server
// stall: then an event waits until the stall ends.
type heldWatch struct {
	w     *world
	inner watch.Interface
	out   chan watch.Event
	stop  chan struct{}
	once  sync.Once
}

func (h *heldWatch) ResultChan() <-chan watch.Event { return h.out }

func (h *heldWatch) Stop() { h.once.Do(func() { close(h.stop) }) }

func (h *heldWatch) run() {
	defer close(h.out)
	defer h.inner.Stop()
	for {
		var ev watch.Event
		select {
		case <-h.stop:
			return
		case e, open := <-h.inner.ResultChan():
			if !open {
				return
			}
			ev = e
		}
		off := time.Since(h.w.start)
		if until := h.w.stalls.advance(off, 0); until > off && !h.w.cfg.Profile.StallWritesOnly {
			t := time.NewTimer(until - off)
			select {
			case <-t.C:
			case <-h.stop:
				t.Stop()
				return
			}
		}
		select {
		case h.out <- ev:
		case <-h.stop:
			return
		}
	}
}

func holderOf(l *coordinationv1.Lease) string {
	if l == nil || l.Spec.HolderIdentity == nil {
		return ""
	}
	return *l.Spec.HolderIdentity
}
