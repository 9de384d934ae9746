package leasehold

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/leasehold/leasehold/internal/leaserecord"
	"github.com/leasehold/leasehold/leaseholdtest"
)

// termMetricsRecorder is a Metrics that also implements TermMetrics and
// records what it is told.
type termMetricsRecorder struct {
	noMetrics
	mu       sync.Mutex
	events   []string
	headroom []time.Duration
}

func (m *termMetricsRecorder) add(ev string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.events = append(m.events, ev)
}
func (m *termMetricsRecorder) Yield(name, outcome string) { m.add("yield:" + outcome) }
func (m *termMetricsRecorder) StepDownTimeout(string)     { m.add("step-down-timeout") }
func (m *termMetricsRecorder) WorkOutlived(string)        { m.add("work-outlived") }
func (m *termMetricsRecorder) RenewHeadroom(_ string, d time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.headroom = append(m.headroom, d)
}

func (m *termMetricsRecorder) got() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.events...)
}

// Each TermMetrics event is reported once, when it happens: a yield's
// request and outcome (completed, refused), a step-down timeout, a lost
// term's work outliving the margin, and each renewal's headroom (the
// renew deadline minus the time from the previous successful send to the
// answer: 10s - 2s at the defaults on a quiet server).
func TestTermMetrics(t *testing.T) {
	with := func(m *termMetricsRecorder, more ...func(*Config)) func(*Config) {
		return func(c *Config) {
			c.Metrics = m
			for _, f := range more {
				f(c)
			}
		}
	}
	t.Run("yield completed and headroom", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			h := newHarness(t)
			m := &termMetricsRecorder{}
			a := h.candidate("a", with(m)).start()
			a.waitLeader()
			h.candidate("b").start()
			h.advance(5 * time.Second)
			if err := a.e.Yield(context.Background(), "b"); err != nil {
				t.Fatal(err)
			}
			if got := fmt.Sprint(m.got()); got != "[yield:requested yield:completed]" {
				t.Fatalf("events %s, want a yield requested then completed", got)
			}
			m.mu.Lock()
			defer m.mu.Unlock()
			if len(m.headroom) < 2 {
				t.Fatalf("%d headroom reports in 5s of renewals every 2s", len(m.headroom))
			}
			for _, d := range m.headroom {
				if d != 8*time.Second {
					t.Fatalf("headroom %v, want RenewDeadline - RetryPeriod = 8s on a server that answers at once", d)
				}
			}
		})
	})
	t.Run("yield refused", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			h := newHarness(t)
			m := &termMetricsRecorder{}
			a := h.candidate("a", with(m)).start()
			a.waitLeader()
			h.srv.AddHook(func(_ context.Context, r leaseholdtest.Request) error {
				if r.Client == "a" && r.Verb == "update" && leaserecord.Holder(r.Lease) == "" {
					return apierrors.NewBadRequest("no")
				}
				return nil
			})
			if err := a.e.Yield(context.Background(), ""); err == nil {
				t.Fatal("Yield succeeded although the release was refused")
			}
			if got := fmt.Sprint(m.got()); got != "[yield:requested yield:refused]" {
				t.Fatalf("events %s, want a yield requested then refused", got)
			}
		})
	})
	t.Run("step-down timeout", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			h := newHarness(t)
			m := &termMetricsRecorder{}
			a := h.candidate("a", with(m, func(c *Config) { c.StepDownTimeout = 5 * time.Second }))
			a.hold = make(chan struct{})
			a.start()
			a.waitLeader()
			a.cancel()
			h.advance(6 * time.Second)
			if got := fmt.Sprint(m.got()); got != "[step-down-timeout]" {
				t.Fatalf("events %s, want one step-down timeout", got)
			}
		})
	})
	t.Run("work outlived", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			h := newHarness(t)
			m := &termMetricsRecorder{}
			a := h.candidate("a", with(m))
			a.hold = make(chan struct{})
			a.start()
			a.waitLeader()
			h.srv.AddHook(func(_ context.Context, r leaseholdtest.Request) error {
				if r.Client == "a" && r.Verb == "update" {
					return apierrors.NewInternalError(errors.New("down"))
				}
				return nil
			})
			h.advance(15 * time.Second) // deadline at 10s, then the 3s margin
			if got := fmt.Sprint(m.got()); got != "[work-outlived]" {
				t.Fatalf("events %s, want one work outliving its lost term", got)
			}
		})
	})
}
