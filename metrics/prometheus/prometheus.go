// Package prometheus exports a leasehold elector's metrics to Prometheus.
//
// It keeps the names that client-go's leader election exports, so existing
// dashboards and alerts keep working:
//
//	leader_election_master_status{name}   1 while this process leads, else 0
//	leader_election_slowpath_total{name}  writes that lost a race and re-read
//
// and adds:
//
//	leader_election_transitions_total{name}          terms won by this process
//	leader_election_renew_duration_seconds{name}     histogram of renew latency
//	leader_election_renew_failures_total{name}       failed renew requests
//	leader_election_takeover_duration_seconds{name}  histogram, release seen to lease held
//
// Register on any registerer: prometheus.DefaultRegisterer, a new
// registry, or controller-runtime's metrics.Registry.
package prometheus

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/leasehold/leasehold"
)

// Metrics implements leasehold.Metrics with Prometheus collectors.
type Metrics struct {
	status      *prometheus.GaugeVec
	slowPath    *prometheus.CounterVec
	transitions *prometheus.CounterVec
	renew       *prometheus.HistogramVec
	renewFailed *prometheus.CounterVec
	takeover    *prometheus.HistogramVec
}

var _ leasehold.Metrics = (*Metrics)(nil)

// New creates the collectors and registers them on reg. It fails if any of
// them is already registered there.
func New(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		status: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "leader_election_master_status",
			Help: "1 while this process leads the named election, else 0.",
		}, []string{"name"}),
		slowPath: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "leader_election_slowpath_total",
			Help: "Writes to the lease that lost a race and needed a re-read.",
		}, []string{"name"}),
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "leader_election_transitions_total",
			Help: "Terms won by this process.",
		}, []string{"name"}),
		renew: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "leader_election_renew_duration_seconds",
			Help:    "Latency of lease renew requests, successful or not.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"name"}),
		renewFailed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "leader_election_renew_failures_total",
			Help: "Renew requests that failed.",
		}, []string{"name"}),
		takeover: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "leader_election_takeover_duration_seconds",
			Help:    "Time from observing a released lease to holding it.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"name"}),
	}
	for _, c := range []prometheus.Collector{m.status, m.slowPath, m.transitions, m.renew, m.renewFailed, m.takeover} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// LeaderChanged implements leasehold.Metrics.
func (m *Metrics) LeaderChanged(name string, leading bool) {
	v := 0.0
	if leading {
		v = 1
	}
	m.status.WithLabelValues(name).Set(v)
}

// SlowPath implements leasehold.Metrics.
func (m *Metrics) SlowPath(name string) { m.slowPath.WithLabelValues(name).Inc() }

// Transition implements leasehold.Metrics.
func (m *Metrics) Transition(name string) { m.transitions.WithLabelValues(name).Inc() }

// Renew implements leasehold.Metrics.
func (m *Metrics) Renew(name string, latency time.Duration, err error) {
	m.renew.WithLabelValues(name).Observe(latency.Seconds())
	if err != nil {
		m.renewFailed.WithLabelValues(name).Inc()
	}
}

// Takeover implements leasehold.Metrics.
func (m *Metrics) Takeover(name string, latency time.Duration) {
	m.takeover.WithLabelValues(name).Observe(latency.Seconds())
}
