package leasehold

import (
	"strings"
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
