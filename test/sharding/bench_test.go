package sharding

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/leasehold/leasehold/test/bench"
)

// The bench's sharding phase (bench.RunShard; `make bench` runs it as the
// phase "sharding" and renders it in BENCHMARKS.md), smoke-sized (K = 8,
// 3s/2s/500ms): it runs on the real control plane, its numbers are sane,
// and it renders. With LEASEHOLD_SHARD_BENCH=full it runs the full phase,
// and with LEASEHOLD_SHARD_BENCH_OUT=file writes its Markdown there.
func TestBenchShardPhaseSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("about a minute")
	}
	o := bench.ShardSmokeOptions()
	limit := 4 * time.Minute
	if os.Getenv("LEASEHOLD_SHARD_BENCH") == "full" {
		// The full phase (about 12 minutes): K = 8, 64, 256 at 15s/10s/2s.
		o, limit = bench.ShardFullOptions(), 30*time.Minute
	}
	o.Log = testWriter{t}
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	res := bench.RunShard(ctx, cp.Config(), o)
	t.Logf("\n%s", res.Markdown())
	if out := os.Getenv("LEASEHOLD_SHARD_BENCH_OUT"); out != "" {
		if err := os.WriteFile(out, []byte(res.Markdown()), 0o644); err != nil {
			t.Error(err)
		}
	}
	for _, e := range res.Errors {
		t.Errorf("bench error: %s", e)
	}
	for _, row := range res.Rows {
		if row.Design == bench.DesignShard {
			if row.Overlaps != 0 || row.Leave < 0 || row.Join < 0 || row.Crash < 0 || row.LeaveGaps.N() != row.LeaverShare {
				t.Errorf("shard package: %+v", row)
			}
			if bound := 30*(o.N+1) + 10; row.PerMin() > float64(bound)*float64(2*time.Second)/float64(o.Timings.Retry) {
				t.Errorf("shard package: %.0f requests/min at RetryPeriod %v", row.PerMin(), o.Timings.Retry)
			}
		}
	}
	if md := res.Markdown(); !strings.Contains(md, "#### Sharding") || len(res.Targets()) != 8*len(o.Ks) {
		t.Errorf("rendering: %d targets, want 8 per K:\n%s", len(res.Targets()), md)
	}
	for _, tg := range res.Targets() {
		t.Log(tg)
	}
	if len(res.Events) == 1 {
		if e := res.Events[0]; !e.ServerFilters || e.On >= e.Off {
			t.Errorf("events: %+v; want server filtering, and fewer events with it", e)
		}
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}
