package bench

import (
	"fmt"
	"math"
	"strings"
)

// The sharding and fencing phases (shard.go, fence.go) each start a control
// plane of their own and render sections of their own; this file holds
// what Run and the report call for them, and the targets on counts rather
// than durations.

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
// stretch target (handoff.go), then the shard package's, K by K (shard.go:
// moves, cost, balance, shards moved, overlaps).
func (r *Report) MoreTargets() []Target {
	ts := r.rollingTargets()
	if r.Shard != nil {
		ts = append(ts, r.Shard.Targets()...)
	}
	return ts
}

// countTarget is a target on a count (requests/min, leader changes,
// shards): met when measured ≤ limit, with the amount in Detail.
func countTarget(what string, limit, measured float64, valid bool) Target {
	t := Target{What: what, Valid: valid, Met: valid && measured <= limit}
	switch {
	case !valid:
		t.Detail = "target ≤ " + fmtCount(limit) + ", not measured"
	case t.Met:
		t.Detail = fmt.Sprintf("%s ≤ %s (%s to spare)", fmtCount(measured), fmtCount(limit), fmtCount(limit-measured))
	default:
		t.Detail = fmt.Sprintf("%s > %s (by %s)", fmtCount(measured), fmtCount(limit), fmtCount(measured-limit))
	}
	return t
}

// fmtCount prints numbers within 0.05 of a whole one as that, others
// with one decimal.
func fmtCount(v float64) string {
	if math.Abs(v-math.Round(v)) < 0.05 {
		return fmt.Sprintf("%.0f", math.Round(v)+0) // +0 turns -0 into 0
	}
	return fmt.Sprintf("%.1f", v)
}
