// Package timing holds the rules an election's three timings must obey,
// for the election (the root package) and shard alike: each problem is
// one sentence that names the field, its value and the fix.
package timing

import (
	"fmt"
	"time"
)

// RenewJitterFactor is the headroom RenewDeadline must leave over
// RetryPeriod: with less than 1.2 retry periods per deadline, a single
// slow request costs the lease.
const RenewJitterFactor = 1.2

// Problems returns what is wrong with leaseDuration, renewDeadline and
// retryPeriod, nil if nothing is. A negative one is reported alone: the
// other rules would only repeat it.
func Problems(leaseDuration, renewDeadline, retryPeriod time.Duration) []string {
	var problems []string
	add := func(format string, args ...any) {
		problems = append(problems, fmt.Sprintf(format, args...))
	}
	ld, rd, rp := leaseDuration, renewDeadline, retryPeriod
	for _, f := range []struct {
		name string
		d    time.Duration
	}{{"LeaseDuration", ld}, {"RenewDeadline", rd}, {"RetryPeriod", rp}} {
		if f.d < 0 {
			add("%s is %v: durations must not be negative; use 0 for the default", f.name, f.d)
		}
	}
	if len(problems) > 0 {
		return problems
	}
	if ld < time.Second {
		add("LeaseDuration is %v: it must be at least 1s, the Lease's unit", ld)
	} else if ld%time.Second != 0 {
		add("LeaseDuration is %v: the Lease stores whole seconds; use %v or %v",
			ld, ld.Truncate(time.Second), ld.Truncate(time.Second)+time.Second)
	}
	if minRD := time.Duration(RenewJitterFactor * float64(rp)); rd <= minRD {
		add("RenewDeadline is %v: it must exceed 1.2 x RetryPeriod (%v) so a renewal can be retried; raise RenewDeadline or lower RetryPeriod", rd, minRD)
	}
	if ld <= rd+rp {
		add("LeaseDuration is %v: it must exceed RenewDeadline + RetryPeriod (%v + %v = %v) to leave a safety margin for the old leader to stop; raise LeaseDuration to at least %v",
			ld, rd, rp, rd+rp, (rd + rp + time.Second).Truncate(time.Second))
	}
	return problems
}
