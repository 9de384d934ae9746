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

// TermMetrics is an optional extension of Metrics: a Config.Metrics that
// also implements it receives the events of a term's end and of its
// renewals' headroom. It is separate so that implementations of Metrics
// written before it keep compiling. Every method must be cheap and must
// not block; name is Config.Name.
type TermMetrics interface {
	// Yield reports a handoff this process was asked for (Elector.Yield
	// or PreferredHolderAnnotation): "requested" when it begins, then one
	// of "completed" (the release landed), "refused" (the server refused
	// the release for good: ErrLeaseRefused or ErrForbidden) or "failed"
	// (the release failed otherwise, or the term ended first). The gap
	// until the successor leads is its Takeover latency.
	Yield(name, outcome string)
	// StepDownTimeout counts a step-down whose work did not return within
	// StepDownTimeout (Run returns ErrStepDownTimeout).
	StepDownTimeout(name string)
	// WorkOutlived counts a lost term whose work did not return within
	// the safety margin (ErrWorkOutlivedLease): another leader may have
	// started while it ran.
	WorkOutlived(name string)
	// RenewHeadroom reports, after each successful renewal, how much of
	// RenewDeadline was left: RenewDeadline minus the time from the send
	// of the previous successful write to this renewal's answer. Near
	// zero, the term is at risk of ending on a slow API server.
	RenewHeadroom(name string, headroom time.Duration)
}

// Yield outcomes reported to TermMetrics.Yield.
const (
	YieldRequested = "requested"
	YieldCompleted = "completed"
	YieldRefused   = "refused"
	YieldFailed    = "failed"
)

// termMetrics returns Config.Metrics as a TermMetrics, or one that records
// nothing.
func (e *Elector) termMetrics() TermMetrics {
	if m, ok := e.cfg.Metrics.(TermMetrics); ok {
		return m
	}
	return noMetrics{}
}

func (noMetrics) Yield(string, string)                {}
func (noMetrics) StepDownTimeout(string)              {}
func (noMetrics) WorkOutlived(string)                 {}
func (noMetrics) RenewHeadroom(string, time.Duration) {}
