// Package testkit is what the test module's packages share: polling a
// condition (Eventually), collecting an elector's log lines (Logs), the
// control plane a package's TestMain or a test starts (RunWithControlPlane,
// StartControlPlane, Shared), namespaces, and a client transport that
// records and steers the requests of one client (Wire).
//
// It is a normal package, imported by test files only; it fails tests,
// never skips them, when the control plane is missing.
package testkit

import (
	"testing"
	"time"
)

// Poller polls a condition every Every.
type Poller struct{ Every time.Duration }

// poll10ms is the default Poller: fast enough to time a handoff to a few
// milliseconds, slow enough not to load a 2-core machine with a condition
// that makes a request.
var poll10ms = Poller{Every: 10 * time.Millisecond}

// Eventually polls cond every 10ms until it holds, and returns how long
// that took; it fails t if within passes first.
func Eventually(t testing.TB, within time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	return poll10ms.Eventually(t, within, what, cond)
}

// Eventually polls cond every p.Every until it holds, and returns how long
// that took; it fails t if within passes first.
func (p Poller) Eventually(t testing.TB, within time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := start.Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", within, what)
		}
		time.Sleep(p.Every)
	}
	return time.Since(start)
}

// Must fails t at once if err is not nil.
func Must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// Timing is an elector's three knobs: LeaseDuration, RenewDeadline and
// RetryPeriod.
type Timing struct{ L, D, P time.Duration }

// Fast is the timing of most tests on a real control plane: a 500ms
// safety margin (L-D-P), and four renewal attempts per deadline, which
// survives a loaded 2-core machine running the control plane under the
// race detector.
var Fast = Timing{L: 3 * time.Second, D: 2 * time.Second, P: 500 * time.Millisecond}
