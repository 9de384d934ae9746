package leasehold

import (
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// Logs a person can follow (issue 22, 4): every line carries the logger
// name "leasehold", and a takeover says why the Lease was free.
func TestLogsNameTheLoggerAndTheTakeoverCause(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t)
		h.putLease("x", 15) // x stops renewing: its claim expires
		b := h.candidate("b").start()
		h.advance(16 * time.Second)
		b.waitLeader()
		if n := len(b.logs.matching("the claim of x expired")); n != 1 {
			t.Fatalf("%d takeover lines naming x's expired claim, want 1:\n%s", n, b.logs)
		}
		for _, line := range b.logs.matching("") {
			if !strings.HasPrefix(line, "leasehold ") {
				t.Fatalf("a line without the logger name leasehold: %s", line)
			}
		}
		if n := len(b.logs.matching(`"leaseTransitions"=1`)); n == 0 {
			t.Fatalf("the term is not logged by its leaseTransitions:\n%s", b.logs)
		}
	})
}

// takeoverMetrics records Takeover calls.
type takeoverMetrics struct {
	noMetrics
	mu    sync.Mutex
	takes []time.Duration
}

func (m *takeoverMetrics) Takeover(_ string, d time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.takes = append(m.takes, d)
}

// A takeover after an expiry is measured too (issue 22, 6: every expiry
// takeover used to go unrecorded), from the instant the claim expired.
func TestTakeoverMetricAfterExpiry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t)
		m := &takeoverMetrics{}
		h.putLease("x", 15)
		b := h.candidate("b", func(c *Config) { c.Metrics = m }).start()
		h.advance(16 * time.Second)
		b.waitLeader()
		m.mu.Lock()
		defer m.mu.Unlock()
		if len(m.takes) != 1 || m.takes[0] < 0 || m.takes[0] > time.Second {
			t.Fatalf("takeover metrics %v, want one within a second of the expiry", m.takes)
		}
	})
}
