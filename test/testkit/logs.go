package testkit

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
)

// Logs collects the log lines of a test's electors, each stamped with the
// seconds since NewLogs and the name of its logger, for the test to look
// for lines (Matching) and to print them: every line is logged to t when
// the test fails, or always with LEASEHOLD_TEST_LOGS=1.
type Logs struct {
	verbosity int
	start     time.Time

	mu    sync.Mutex
	lines []string
}

// NewLogs returns an empty collector whose loggers keep the lines of
// V(verbosity) and below.
func NewLogs(t testing.TB, verbosity int) *Logs {
	l := &Logs{verbosity: verbosity, start: time.Now()}
	t.Cleanup(func() {
		if t.Failed() || os.Getenv("LEASEHOLD_TEST_LOGS") != "" {
			for _, s := range l.Lines() {
				t.Log(s)
			}
		}
	})
	return l
}

// Logger returns a logger whose lines go to l, named name.
func (l *Logs) Logger(name string) logr.Logger {
	return funcr.New(func(prefix, args string) {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.lines = append(l.lines, fmt.Sprintf("%8.3fs %s %s %s", time.Since(l.start).Seconds(), name, prefix, args))
	}, funcr.Options{Verbosity: l.verbosity})
}

// Lines returns every line so far.
func (l *Logs) Lines() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.lines...)
}

// Matching returns the lines that contain every one of subs (every line
// for none).
func (l *Logs) Matching(subs ...string) []string {
	var out []string
next:
	for _, s := range l.Lines() {
		for _, sub := range subs {
			if !strings.Contains(s, sub) {
				continue next
			}
		}
		out = append(out, s)
	}
	return out
}

// String is every line so far, one a line, for a failure message.
func (l *Logs) String() string { return strings.Join(l.Lines(), "\n") }
