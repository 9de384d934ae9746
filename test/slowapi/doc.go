// Package slowapi is the "slow API server" bench phase of issue #25: it
// measures how leader election keeps (or loses) its term when the API
// server is slow, for leasehold, client-go's leaderelection and
// controller-runtime's manager election, in virtual time.
//
// # Worlds
//
// A world is one library on one latency profile: three replicas (one
// leader, two followers once elected) campaign for one Lease with
// LeaseDuration 15s, RenewDeadline 10s, RetryPeriod 2s and
// ReleaseOnCancel, for Config.Duration of virtual time (60 minutes in
// cmd/slowapi), inside a testing/synctest bubble, on leasehold's
// in-memory API server (leaseholdtest.Server, which enforces
// resourceVersion compare-and-swap). No replica crashes or is stopped
// before the world ends.
//
// Every request of every replica goes through a LeasesGetter wrapper
// (client.go) that draws its latency and splits it in two halves: the
// request lands on the server (a write is stored, a read takes its
// snapshot, a watch is registered) at a point drawn uniformly inside the
// latency, and its answer reaches the client after the rest. If the
// request's ctx ends before it lands, the wrapper returns ctx.Err() and
// nothing lands; if it ends after, the wrapper returns ctx.Err() but the
// write stays, as on a real server. Watch events are delivered at once,
// except during a server stall. Draws come from math/rand/v2 PCG sources
// seeded per world and replica (Config.Seed); the stall schedule is
// seeded per profile, so the three libraries meet the same stalls.
//
// # Profiles
//
// Latencies are lognormal, given by their median (p50) and p99 over
// both halves together (sigma = ln(p99/p50) / 2.3263), capped at 1 minute
// (kube-apiserver's default request timeout):
//
//   - healthy: reads and writes p50 5 ms, p99 30 ms (sigma 0.770);
//   - loaded: reads and writes p50 100 ms, p99 2 s (sigma 1.288);
//   - brownout: reads and writes p50 200 ms, p99 6 s (sigma 1.462), and
//     server stalls: the first starts 3–5 min after the world's start,
//     each next one 3–5 min after the previous one's start (uniform), and
//     each lasts 8–12 s (uniform); during a stall no request progresses
//     (one sent or in flight hangs until the stall ends, both halves) and
//     watch events are held;
//   - write-stalls: reads as healthy (p50 5 ms, p99 30 ms); writes p50
//     20 ms, p99 100 ms (sigma 0.692), and 1 % of writes, each on its own
//     draw, stall 3–8 s (uniform) before landing, as behind an etcd fsync
//     stall;
//   - fsync-stalls (not one of issue #25's four; no target): write-stalls'
//     stalls correlated, as a real fsync stall is: every 2–4 min, for
//     3–8 s, no write lands (and no watch event is sent) while reads stay
//     fast.
//
// Profiles holds them; the report prints them with the quantiles drawn.
//
// # Libraries
//
//   - leasehold: leasehold.Run with Rejoin (a lost term is followed by a
//     new campaign); the work is OnStartedLeading until its ctx ends.
//   - client-go: leaderelection.LeaderElector with resourcelock.LeaseLock
//     on the wrapper; after a lost term the process runs a new elector at
//     once under the same identity. The work is OnStartedLeading until its
//     ctx is cancelled (client-go cancels it when Run's renew loop has
//     returned, after the release attempt).
//   - controller-runtime v0.25.2: the manager's election modelled on
//     client-go's leaderelection with what the manager sets: the
//     leader-election client's rest.Config.Timeout = max(RenewDeadline/2,
//     1s) = 5s, applied as a per-request ctx timeout; ReleaseOnCancel as
//     configured (true); a new identity per process; OnStartedLeading
//     ignores its ctx and starts the work on the manager's own ctx;
//     OnStoppedLeading ends the manager, whose binary exits (the work ends
//     there), and the kubelet restarts it after its back-off (10s, doubled
//     per restart up to 5 min, reset after 10 min running). See libs.go and
//     the report for the source lines.
//
// # Measurements
//
// Per world: terms lost (works that ended while the world ran),
// holder changes, leaderless time (no work running), requests per minute
// (all replicas, every verb), the overrun (over the lost terms, the
// longest time a work ran past the send time of its replica's last
// successful write naming it holder, plus RenewDeadline), and two works
// at once (works started while another replica's work ran, and the time
// two or more ran together). cmd/slowapi prints them per hour and writes
// them into BENCHMARKS.md between <!-- slowapi:begin --> and
// <!-- slowapi:end -->, with the targets of issue #25 judged MET or
// MISSED from the measurement.
package slowapi
