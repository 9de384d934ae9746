package bench

import (
	"fmt"
	"math"
	"strings"
)

// The sharding and fencing phases (shard.go, fence.go) each start a control
// plane of their own and render sections of their own; this file holds
// what Run and the report call for them, and the targets that are counts
// rather than durations.

// runsOwn reports whether Run runs the sharding or fencing phase: as any
// phase in a full run, but in a smoke run only when named in Phases, since
// test/sharding and test/fencing run them smoke-sized already and the
// smoke test is part of make test.
func (b *runner) runsOwn(phase string) bool {
	if b.opts.Smoke && len(b.opts.Phases) == 0 {
		return false
	}
	return b.opts.runs(phase)
}

// ownSections renders the sharding and fencing sections for the report.
func (r *Report) ownSections() string {
	var parts []string
	if r.Shard != nil {
		parts = append(parts, r.Shard.Markdown())
	}
	if r.Fence != nil {
		parts = append(parts, r.Fence.Markdown())
	}
	if len(parts) == 0 {
		return ""
	}
	return "\n" + strings.Join(parts, "\n")
}

// MoreTargets are the targets listed after Targets: the rolling update's
// stretch target (handoff.go, counts), then the shard package's, K by K
// (shard.go: moves, cost, balance, shards moved, overlaps).
func (r *Report) MoreTargets() []fmt.Stringer {
	var ts []fmt.Stringer
	for _, t := range r.rollingTargets() {
		ts = append(ts, t)
	}
	if r.Shard != nil {
		ts = append(ts, r.Shard.Targets()...)
	}
	return ts
}

// CountTarget is a target on a count (requests/min, leader changes,
// shards), checked: met when Measured ≤ Limit.
type CountTarget struct {
	What            string
	Limit, Measured float64
	Valid           bool // measured at all
}

// Met reports whether the target was measured and met.
func (t CountTarget) Met() bool { return t.Valid && t.Measured <= t.Limit }

func (t CountTarget) String() string {
	switch {
	case !t.Valid:
		return fmt.Sprintf("NOT MEASURED  %s (target ≤ %s)", t.What, fmtCount(t.Limit))
	case t.Met():
		return fmt.Sprintf("MET     %s: %s ≤ %s (%s to spare)", t.What, fmtCount(t.Measured), fmtCount(t.Limit), fmtCount(t.Limit-t.Measured))
	default:
		return fmt.Sprintf("MISSED  %s: %s > %s (by %s)", t.What, fmtCount(t.Measured), fmtCount(t.Limit), fmtCount(t.Measured-t.Limit))
	}
}

// fmtCount prints numbers within 0.05 of a whole one as that, others
// with one decimal.
func fmtCount(v float64) string {
	if math.Abs(v-math.Round(v)) < 0.05 {
		return fmt.Sprintf("%.0f", math.Round(v)+0) // +0: no "-0"
	}
	return fmt.Sprintf("%.1f", v)
}
