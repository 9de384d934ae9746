package fencing

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"

	"github.com/leasehold/leasehold"
	"github.com/leasehold/leasehold/test/testkit"
)

// timings of the electors: a 500ms safety margin (L-D-P) and four
// renewal attempts per deadline, robust on a loaded 2-core machine.
const (
	leaseDuration = 3 * time.Second
	renewDeadline = 2 * time.Second
	retryPeriod   = 500 * time.Millisecond
)

// elector is a leasehold elector running in a goroutine of the test.
type elector struct {
	id string
	// cut, when set, makes every request of the elector's client fail, as
	// if the process were partitioned from the API server.
	cut atomic.Bool
	*testkit.Background

	mu     sync.Mutex
	ctxs   []context.Context // the work's ctx of each term
	termCh chan leasehold.Term
}

type electorOpts struct {
	ns, id  string
	release bool
	// work runs as OnStartedLeading, after the term has been recorded.
	// Default: wait for ctx.
	work func(ctx context.Context)
}

// startElector runs a leasehold elector for ns/leaseName as admin; its
// Run is cancelled and awaited when the test ends.
func startElector(t *testing.T, o electorOpts) *elector {
	t.Helper()
	e := &elector{id: o.id, termCh: make(chan leasehold.Term, 8)}
	cfg := leasehold.WithRequestTimeout(adminConfig(), renewDeadline)
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper { return &cutTransport{next: rt, cut: &e.cut} })
	work := o.work
	if work == nil {
		work = func(ctx context.Context) { <-ctx.Done() }
	}
	el, err := leasehold.New(leasehold.Config{
		Lock: &leasehold.LeaseLock{
			Namespace: o.ns, Name: leaseName, Identity: o.id,
			Client: kubernetes.NewForConfigOrDie(cfg).CoordinationV1(),
		},
		LeaseDuration:   leaseDuration,
		RenewDeadline:   renewDeadline,
		RetryPeriod:     retryPeriod,
		ReleaseOnCancel: o.release,
		Callbacks: leasehold.Callbacks{
			OnStartedLeading: func(ctx context.Context) {
				term, _ := leasehold.TermFromContext(ctx)
				e.mu.Lock()
				e.ctxs = append(e.ctxs, ctx)
				e.mu.Unlock()
				e.termCh <- term
				work(ctx)
			},
		},
	})
	if err != nil {
		t.Fatalf("leasehold.New(%s): %v", o.id, err)
	}
	e.Background = testkit.Go(t, klog.NewContext(context.Background(), logr.Discard()), e.id, 15*time.Second, el.Run)
	return e
}

// leads waits for the elector's next term.
func (e *elector) leads(t *testing.T, within time.Duration) leasehold.Term {
	t.Helper()
	select {
	case term := <-e.termCh:
		return term
	case <-time.After(within):
		t.Fatalf("%s did not start leading within %v", e.id, within)
		return leasehold.Term{}
	}
}

// workCtx returns the work's ctx of the elector's latest term: it
// carries the term, for fence.Stamp.
func (e *elector) workCtx() context.Context {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.ctxs[len(e.ctxs)-1]
}

// stop cancels Run and waits for it to return.
func (e *elector) stop(t *testing.T) {
	t.Helper()
	_ = e.Stop(t, 15*time.Second) // how the term ended is not what these tests check
}

var errCut = errors.New("cut off from the API server (test)")

type cutTransport struct {
	next http.RoundTripper
	cut  *atomic.Bool
}

func (c *cutTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if c.cut.Load() {
		return nil, errCut
	}
	return c.next.RoundTrip(req)
}
