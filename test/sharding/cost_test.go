package sharding

import (
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/leasehold/leasehold/test/testkit"
)

// The API cost of a group at the default timings (15s/10s/2s), N = 3:
// flat in K (K = 8 and K = 128 measured side by side, in the same minute)
// and under 30·(N+1)+10 requests a minute.
func TestRequestsPerMinuteFlatInK(t *testing.T) {
	if testing.Short() {
		t.Skip("a minute of steady state")
	}
	const n = 3
	def := testkit.Timing{L: 15 * time.Second, D: 10 * time.Second, P: 2 * time.Second}
	type group struct {
		shards  int
		tr      *tracker
		members []*member
		ids     []string
	}
	var groups []*group
	for _, k := range []int{8, 128} {
		ns := newNamespace(t)
		g := &group{shards: k, tr: newTracker()}
		for i := 0; i < n; i++ {
			id := fmt.Sprintf("k%d-m%d", k, i)
			g.ids = append(g.ids, id)
			g.members = append(g.members, startMember(t, memberOpts{id: id, ns: ns, group: "cost", shards: k, t: def, release: true, tr: g.tr}))
		}
		groups = append(groups, g)
	}
	for _, g := range groups {
		poll.Eventually(t, 10*time.Second, fmt.Sprintf("K=%d balanced", g.shards), func() bool { return balancedOver(g.tr, g.shards, g.ids...) })
	}
	// Let the joins' writes and the first renewals pass, then measure a
	// minute.
	time.Sleep(5 * time.Second)
	snap := func(g *group) map[string]int {
		out := map[string]int{}
		for _, m := range g.members {
			for v, c := range m.net.snapshot() {
				out[v] += c
			}
		}
		return out
	}
	before := map[int]map[string]int{}
	for _, g := range groups {
		before[g.shards] = snap(g)
	}
	const window = time.Minute
	time.Sleep(window)
	bound := 30*(n+1) + 10
	totals := map[int]int{}
	var mu sync.Mutex
	for _, g := range groups {
		after := snap(g)
		var parts []string
		total := 0
		for v, c := range after {
			if d := c - before[g.shards][v]; d > 0 {
				parts = append(parts, fmt.Sprintf("%s=%d", v, d))
				total += d
			}
		}
		sort.Strings(parts)
		mu.Lock()
		totals[g.shards] = total
		mu.Unlock()
		t.Logf("K=%d, N=%d, 15s/10s/2s: %d requests in %v (%s); bound 30*(N+1)+10 = %d", g.shards, n, total, window, strings.Join(parts, " "), bound)
		if total > bound {
			t.Errorf("K=%d: %d requests/min, over the bound %d", g.shards, total, bound)
		}
		g.tr.check(t)
	}
	if d := totals[128] - totals[8]; d > 3 || d < -3 {
		t.Errorf("not flat in K: %v requests/min", totals)
	}
}
