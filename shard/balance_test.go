package shard

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

func ids(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("m%02d", i)
	}
	return out
}

func countsOf(t []string, live []string) (mx, mn int) {
	c := map[string]int{}
	for _, x := range t {
		c[x]++
	}
	mn = len(t)
	for _, id := range live {
		mx, mn = max(mx, c[id]), min(mn, c[id])
	}
	return mx, mn
}

func moved(a, b []string) int {
	n := 0
	for i := range a {
		if a[i] != b[i] {
			n++
		}
	}
	return n
}

// The balance contract, on random groups and histories: balanced,
// idempotent, a leave moves only the leaver's shards, a join moves at
// most ceil(K/(N+1)) shards, all to the joiner.
func TestBalanceIsFairAndStable(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for round := 0; round < 3000; round++ {
		k := 1 + rng.IntN(MaxShards)
		if round%2 == 0 {
			k = 1 + rng.IntN(70)
		}
		n := 1 + rng.IntN(12)
		live := ids(n)
		// A random, possibly unbalanced, starting point with strangers.
		cur := make([]string, k)
		for i := range cur {
			switch rng.IntN(4) {
			case 0:
				cur[i] = ""
			case 1:
				cur[i] = "gone"
			default:
				cur[i] = live[rng.IntN(n)]
			}
		}
		b := balance(cur, live)
		if mx, mn := countsOf(b, live); mx-mn > 1 {
			t.Fatalf("k=%d n=%d: max-min = %d", k, n, mx-mn)
		}
		for i, x := range b {
			if !slices.Contains(live, x) {
				t.Fatalf("k=%d n=%d: shard %d targeted to %q, not live", k, n, i, x)
			}
		}
		if again := balance(b, live); moved(b, again) != 0 {
			t.Fatalf("k=%d n=%d: not idempotent: %d moved on a second pass", k, n, moved(b, again))
		}

		// Leave of a random member.
		if n > 1 {
			leaver := live[rng.IntN(n)]
			rest := slices.DeleteFunc(slices.Clone(live), func(id string) bool { return id == leaver })
			after := balance(b, rest)
			for i := range b {
				if b[i] != leaver && after[i] != b[i] {
					t.Fatalf("k=%d n=%d: leave of %s moved shard %d from %s to %s", k, n, leaver, i, b[i], after[i])
				}
			}
			if mx, mn := countsOf(after, rest); mx-mn > 1 {
				t.Fatalf("k=%d n=%d: after leave max-min = %d", k, n, mx-mn)
			}
		}

		// Join of a new member (sorting anywhere among the others).
		joiner := fmt.Sprintf("m%02d+", rng.IntN(n+1))
		withJoiner := append(slices.Clone(live), joiner)
		slices.Sort(withJoiner)
		after := balance(b, withJoiner)
		limit := (k + n) / (n + 1) // ceil(k/(n+1))
		if m := moved(b, after); m > limit {
			t.Fatalf("k=%d n=%d: join moved %d > ceil(k/(n+1)) = %d", k, n, m, limit)
		}
		for i := range b {
			if after[i] != b[i] && after[i] != joiner {
				t.Fatalf("k=%d n=%d: join moved shard %d from %s to %s, not to the joiner", k, n, i, b[i], after[i])
			}
		}
		if mx, mn := countsOf(after, withJoiner); mx-mn > 1 {
			t.Fatalf("k=%d n=%d: after join max-min = %d", k, n, mx-mn)
		}
	}
}

func TestBalanceWithNobodyLiveKeepsTargets(t *testing.T) {
	cur := []string{"a", "", "b"}
	if got := balance(cur, nil); !slices.Equal(got, cur) {
		t.Errorf("balance(no live) = %v, want %v unchanged", got, cur)
	}
}

// Settled targets stay put: any targets over the live members whose
// counts differ by at most one are a fixed point, whoever holds the extra
// shards, so the proposer moves nothing when nothing changed.
func TestBalancedTargetsStayPut(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for round := 0; round < 2000; round++ {
		k := 1 + rng.IntN(70)
		n := 1 + rng.IntN(12)
		live := ids(n)
		// Deal k/n to each, and one more to k mod n random members.
		var deck []string
		for j, x := range rng.Perm(n) {
			c := k / n
			if j < k%n {
				c++
			}
			for range c {
				deck = append(deck, live[x])
			}
		}
		rng.Shuffle(len(deck), func(i, j int) { deck[i], deck[j] = deck[j], deck[i] })
		if m := moved(deck, balance(deck, live)); m != 0 {
			t.Fatalf("k=%d n=%d: balanced targets %v: %d moved", k, n, deck, m)
		}
	}
}
