package controlplanefaults

import (
	"context"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"

	"github.com/leasehold/leasehold"
	"github.com/leasehold/leasehold/test/testkit"
)

var std = testkit.Fast

// elector is one leasehold elector in this process, its client on a wire.
type elector struct {
	id   string
	wire *testkit.Wire
	el   *leasehold.Elector
	*testkit.Background

	mu      sync.Mutex
	starts  int
	stops   int
	leaders []string
}

func startElector(t *testing.T, id, ns, name string, tm testkit.Timing, tr *testkit.Tracker, lg *testkit.Logs, opts ...func(*leasehold.Config)) *elector {
	t.Helper()
	e := &elector{id: id, wire: &testkit.Wire{}}
	cs := kubernetes.NewForConfigOrDie(leasehold.WithRequestTimeout(e.wire.Wrap(cp.Config()), tm.D))
	cfg := leasehold.Config{
		Lock:          &leasehold.LeaseLock{Namespace: ns, Name: name, Identity: id, Client: cs.CoordinationV1()},
		LeaseDuration: tm.L, RenewDeadline: tm.D, RetryPeriod: tm.P,
		ReleaseOnCancel: true,
		Callbacks: leasehold.Callbacks{
			OnStartedLeading: func(ctx context.Context) {
				e.mu.Lock()
				e.starts++
				e.mu.Unlock()
				defer tr.Enter(id, nil)()
				<-ctx.Done()
			},
			OnStoppedLeading: func() {
				e.mu.Lock()
				e.stops++
				e.mu.Unlock()
			},
			OnNewLeader: func(l string) {
				e.mu.Lock()
				e.leaders = append(e.leaders, l)
				e.mu.Unlock()
			},
		},
	}
	for _, o := range opts {
		o(&cfg)
	}
	el, err := leasehold.New(cfg)
	testkit.Must(t, err)
	e.el = el
	e.Background = testkit.Go(t, klog.NewContext(context.Background(), lg.Logger(id)), id, 20*time.Second, el.Run)
	return e
}

// startLeading starts an elector as startElector does and waits for it to
// lead, failing the test if another elector starts leading first.
func startLeading(t *testing.T, id, ns, name string, tm testkit.Timing, tr *testkit.Tracker, lg *testkit.Logs, opts ...func(*leasehold.Config)) *elector {
	t.Helper()
	e := startElector(t, id, ns, name, tm, tr, lg, opts...)
	if s := tr.NextStart(t, 15*time.Second); s.ID != id {
		t.Fatalf("%s started first", s.ID)
	}
	return e
}

func (e *elector) counts() (starts, stops int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.starts, e.stops
}

func (e *elector) sees(id string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.leaders) > 0 && e.leaders[len(e.leaders)-1] == id
}

func (e *elector) stop(t *testing.T) {
	t.Helper()
	if err := e.Stop(t, 20*time.Second); err != nil {
		t.Errorf("%s: Run returned %v", e.id, err)
	}
}

// rejoin sets Config.Rejoin.
func rejoin(c *leasehold.Config) { c.Rejoin = true }
