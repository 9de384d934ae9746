package bench

import (
	"fmt"
	"math"
	"slices"
	"time"
)

// Dist is a set of latency samples.
type Dist struct {
	Samples []time.Duration
}

func (d *Dist) Add(v time.Duration) { d.Samples = append(d.Samples, v) }

func (d Dist) N() int { return len(d.Samples) }

func (d Dist) sorted() []time.Duration {
	s := slices.Clone(d.Samples)
	slices.Sort(s)
	return s
}

// Quantile is the nearest-rank quantile q in [0,1] (0 if no samples).
// With 20 samples, p99 is the maximum.
func (d Dist) Quantile(q float64) time.Duration {
	s := d.sorted()
	if len(s) == 0 {
		return 0
	}
	rank := int(math.Ceil(q*float64(len(s)))) - 1
	rank = max(0, min(rank, len(s)-1))
	return s[rank]
}

func (d Dist) P50() time.Duration { return d.Quantile(0.5) }
func (d Dist) P99() time.Duration { return d.Quantile(0.99) }
func (d Dist) Min() time.Duration { return d.Quantile(0) }
func (d Dist) Max() time.Duration { return d.Quantile(1) }

// fmtDur prints a latency with a precision that suits its size.
func fmtDur(d time.Duration) string {
	a := d
	if a < 0 {
		a = -a
	}
	switch {
	case a < time.Millisecond:
		return fmt.Sprintf("%.2fms", float64(d)/1e6)
	case a < 100*time.Millisecond:
		return fmt.Sprintf("%.1fms", float64(d)/1e6)
	case a < 10*time.Second:
		return fmt.Sprintf("%.0fms", float64(d)/1e6)
	default:
		return fmt.Sprintf("%.2fs", d.Seconds())
	}
}

// ratio formats b/a as "12.3x", or "-" when undefined.
func ratio(a, b float64) string {
	if a <= 0 || b < 0 || math.IsNaN(a) || math.IsNaN(b) {
		return "-"
	}
	r := b / a
	switch {
	case r >= 100:
		return fmt.Sprintf("%.0fx", r)
	case r >= 10:
		return fmt.Sprintf("%.1fx", r)
	default:
		return fmt.Sprintf("%.2fx", r)
	}
}
