package leasehold

import "time"

// Metrics receives an elector's measurements. The root package imports no
// metrics library: metrics/prometheus implements this interface for
// Prometheus, keeping client-go's metric names. Every method must be cheap
// and must not block; name is Config.Name.
type Metrics interface {
	// LeaderChanged reports whether this process now leads.
	// (leader_election_master_status)
	LeaderChanged(name string, leading bool)
	// SlowPath counts a write that lost a race and needed a re-read.
	// (leader_election_slowpath_total)
	SlowPath(name string)
	// Transition counts a term won by this process.
	Transition(name string)
	// Renew reports one renew request: its latency and its error, if any.
	Renew(name string, latency time.Duration, err error)
	// Takeover reports how long a free Lease waited to be taken by this
	// process: from observing its release, or from the instant an
	// unrenewed holder's claim expired by this process's clock, to holding
	// it. Not reported for a create or a re-acquisition of its own.
	Takeover(name string, latency time.Duration)
}

// noMetrics is the default Metrics: it records nothing.
type noMetrics struct{}

func (noMetrics) LeaderChanged(string, bool)         {}
func (noMetrics) SlowPath(string)                    {}
func (noMetrics) Transition(string)                  {}
func (noMetrics) Renew(string, time.Duration, error) {}
func (noMetrics) Takeover(string, time.Duration)     {}
