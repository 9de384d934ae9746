package chaos

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/leasehold/leasehold/test/internal/sleep"
)

// The measurement kinds of a lagging kube-apiserver (Config.APIServers =
// 2, a scripted plan from LagPlan): the leader is moved to server 0 and
// every follower to server 1, whose watch events are delayed by Fault.Lag;
// once the followers' view lags steadily, the leader is SIGKILLed
// (KindLagCrash, then restarted) or asked to Yield to anyone
// (KindLagYield). Injected.Takeover is the time to the next START. They
// have no weight in a mixed plan.
const (
	KindLagCrash Kind = "watch-lag+leader-sigkill"
	KindLagYield Kind = "watch-lag+leader-yield"
)

// LagKinds are the measurement kinds.
var LagKinds = []Kind{KindLagCrash, KindLagYield}

// LagPlan returns the scripted plan of a lag measurement: for each lag,
// rounds crashes and rounds yields, alternating.
func LagPlan(lags []time.Duration, rounds int) []Fault {
	var plan []Fault
	for _, lag := range lags {
		for range rounds {
			for _, k := range LagKinds {
				plan = append(plan, Fault{Index: len(plan) + 1, Kind: k, OnLeader: true, Lag: lag, Settle: time.Second, RestartAfter: 500 * time.Millisecond})
			}
		}
	}
	return plan
}

// injectLag runs one measurement fault on the leader.
func (d *driver) injectLag(ctx context.Context, f Fault, inj Injected, leader string) Injected {
	if leader == "" {
		d.problem("fault %d: no leader to measure", f.Index)
		return inj
	}
	inj.Target, inj.WasLeader = leader, true
	lagging := d.upstreams[1]
	moved := false
	for _, id := range d.ids {
		want := 1
		if id == leader {
			want = 0
		}
		if px := d.proxies[id]; px.Upstream() != want {
			px.SetUpstream(want)
			moved = true
		}
	}
	if moved {
		// The moves reset connections: let every candidate watch again
		// (and the leader renew) before measuring.
		if _, err := d.waitStable(ctx, d.cfg.Timings.RetryPeriod*2, d.recoveryTimeout()); err != nil {
			d.problem("fault %d: after moving the candidates: %v", f.Index, err)
		}
		if l, _ := d.waitStable(ctx, 0, time.Second); l != leader {
			d.problem("fault %d: %s leads after the moves, not %s", f.Index, l, leader)
			return inj
		}
	}
	lagging.SetWatchLag(f.Lag)
	// Steady: every event the followers see is Lag old.
	sleep.For(ctx, 2*f.Lag+d.cfg.Timings.RetryPeriod)
	d.mu.Lock()
	p := d.procs[leader]
	inj.TargetInc = d.inc[leader]
	termStart := d.open[leader][""]
	d.mu.Unlock()

	switch f.Kind {
	case KindLagCrash:
		inj.Start = d.kill(p, leader)
	case KindLagYield:
		if err := d.yield(p, leader, ""); err != nil {
			d.problem("fault %d: %v", f.Index, err)
		}
		inj.Start = time.Now()
	}
	if d.waitHandoff(ctx, leader, termStart, inj.Start) {
		d.mu.Lock()
		inj.Next, inj.Takeover = "", 0
		for id, keys := range d.open {
			if t, ok := keys[""]; ok && t.After(inj.Start) {
				inj.Next, inj.Takeover = id, t.Sub(inj.Start)
			}
		}
		d.mu.Unlock()
	} else {
		d.problem("fault %d: no new leader within %v", f.Index, d.recoveryTimeout())
	}
	lagging.SetWatchLag(0)
	inj.Heal = time.Now()
	if f.Kind == KindLagCrash {
		sleep.For(ctx, f.RestartAfter)
		if err := d.start(leader); err != nil {
			d.problem("restart %s: %v", leader, err)
		}
	}
	return inj
}

// LagTable summarises the measurement faults of a report: per kind and
// lag, the takeover times (from the SIGKILL or the Yield request to the
// next START).
func (r *Report) LagTable(w io.Writer) {
	type key struct {
		k   Kind
		lag time.Duration
	}
	m := map[key][]time.Duration{}
	var keys []key
	for _, f := range r.Rec.Faults {
		if !slices.Contains(LagKinds, f.Kind) || f.Next == "" {
			continue
		}
		k := key{f.Kind, f.Lag}
		if _, ok := m[k]; !ok {
			keys = append(keys, k)
		}
		m[k] = append(m[k], f.Takeover)
	}
	if len(keys) == 0 {
		return
	}
	slices.SortFunc(keys, func(a, b key) int {
		if a.k != b.k {
			return strings.Compare(string(a.k), string(b.k))
		}
		return int(a.lag - b.lag)
	})
	t := r.Timings
	fmt.Fprintf(w, "\n| Followers' kube-apiserver watch lag | Leader SIGKILLed: takeover after the kill (min / median / max) | Leader yields to anyone: takeover after the request |\n|---|---|---|\n")
	byLag := map[time.Duration][2]string{}
	var lags []time.Duration
	for _, k := range keys {
		d := m[k]
		slices.Sort(d)
		s := fmt.Sprintf("%v / %v / %v (%d)", d[0].Round(time.Millisecond), d[len(d)/2].Round(time.Millisecond), d[len(d)-1].Round(time.Millisecond), len(d))
		row, ok := byLag[k.lag]
		if !ok {
			lags = append(lags, k.lag)
		}
		if k.k == KindLagCrash {
			row[0] = s
		} else {
			row[1] = s
		}
		byLag[k.lag] = row
	}
	slices.Sort(lags)
	for _, lag := range lags {
		fmt.Fprintf(w, "| %v | %s | %s |\n", lag, byLag[lag][0], byLag[lag][1])
	}
	fmt.Fprintf(w, "\n(L/D/P = %v/%v/%v; the leader on the other, fresh kube-apiserver; takeover by a follower whose every watch event arrives lag late.)\n",
		t.LeaseDuration, t.RenewDeadline, t.RetryPeriod)
}
