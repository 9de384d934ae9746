package shard

import (
	"slices"
	"sort"
)

// balance returns the targets that spread the shards over the live
// members (sorted, unique), moving as few as it can from cur, the current
// targets ("" for none). It is deterministic, so every member that sees
// the same targets and the same live members computes the same answer,
// and idempotent: balance(balance(t, l), l) == balance(t, l).
//
//   - Shards whose target is not live go to a pool.
//   - Quotas: K/N each, and one more for K mod N members. The extra ones
//     go to the members that have the most targets now (ties: smaller
//     identity), so a member keeps what it has whenever the quotas allow.
//   - A member over its quota gives up its highest-numbered shards to the
//     pool; the pool is dealt, lowest shard first, to the member furthest
//     below its quota (ties: smaller identity).
//
// Hence, once applied, max - min <= 1. Starting from balanced targets, a
// leave moves only the leaver's shards (the others' counts are at most
// their new quotas), and a join moves only shards to the joiner, at most
// ceil(K/(N+1)) of them (the members ranked first by count keep the extra
// ones). The package tests check these bounds on random inputs.
func balance(cur []string, live []string) []string {
	next := slices.Clone(cur)
	if len(live) == 0 {
		return next
	}
	isLive := make(map[string]bool, len(live))
	for _, id := range live {
		isLive[id] = true
	}
	count := make(map[string]int, len(live))
	for i, t := range next {
		if isLive[t] {
			count[t]++
		} else {
			next[i] = ""
		}
	}
	order := slices.Clone(live)
	sort.SliceStable(order, func(a, b int) bool {
		if count[order[a]] != count[order[b]] {
			return count[order[a]] > count[order[b]]
		}
		return order[a] < order[b]
	})
	k, n := len(cur), len(live)
	quota := make(map[string]int, n)
	for j, id := range order {
		quota[id] = k / n
		if j < k%n {
			quota[id]++
		}
	}
	for i := k - 1; i >= 0; i-- {
		if t := next[i]; t != "" && count[t] > quota[t] {
			next[i] = ""
			count[t]--
		}
	}
	for i := range next {
		if next[i] != "" {
			continue
		}
		best, need := "", 0
		for _, id := range live { // sorted: ties go to the smaller identity
			if d := quota[id] - count[id]; d > need {
				best, need = id, d
			}
		}
		next[i] = best
		count[best]++
	}
	return next
}
