package timing

import (
	"strings"
	"testing"
	"time"
)

// Each rule names the field, its value and the fix; the defaults pass; a
// negative value is reported alone.
func TestProblems(t *testing.T) {
	s := time.Second
	for _, c := range []struct {
		ld, rd, rp time.Duration
		want       []string
	}{
		{15 * s, 10 * s, 2 * s, nil},
		{-s, 10 * s, 2 * s, []string{"LeaseDuration is -1s: durations must not be negative"}},
		{1500 * time.Millisecond, 500 * time.Millisecond, 200 * time.Millisecond, []string{"LeaseDuration is 1.5s: the Lease stores whole seconds; use 1s or 2s"}},
		{15 * s, 2 * s, 2 * s, []string{"RenewDeadline is 2s: it must exceed 1.2 x RetryPeriod (2.4s)"}},
		{11 * s, 10 * s, 2 * s, []string{"LeaseDuration is 11s: it must exceed RenewDeadline + RetryPeriod (10s + 2s = 12s)", "raise LeaseDuration to at least 13s"}},
	} {
		got := strings.Join(Problems(c.ld, c.rd, c.rp), "; ")
		if len(c.want) == 0 && got != "" {
			t.Errorf("Problems(%v, %v, %v) = %q, want none", c.ld, c.rd, c.rp, got)
		}
		for _, w := range c.want {
			if !strings.Contains(got, w) {
				t.Errorf("Problems(%v, %v, %v) = %q, want it to say %q", c.ld, c.rd, c.rp, got, w)
			}
		}
	}
}
