// Package prometheus exports a leasehold elector's metrics to Prometheus.
//
// It keeps the names, labels and help texts that client-go's leader
// election exports (through k8s.io/component-base and controller-runtime),
// so existing dashboards and alerts keep working:
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
// name is leasehold.Config.Name. Every series of an election appears, at
// zero, as soon as its elector is built (leasehold.New), before its first
// event, so that rate() and increase() see the first increment.
//
// # Registering
//
// New registers the collectors on any prometheus.Registerer. When the
// registry already holds a collector with the same name, labels and help
// text, New reuses it instead of failing. That is what makes New work on
// controller-runtime's registry: importing
// sigs.k8s.io/controller-runtime/pkg/metrics registers client-go's
// leader_election_master_status gauge on metrics.Registry, and New then
// writes leasehold's status into that very gauge (with the manager's own
// election off, as a controllerruntime.Gate requires, nothing else writes
// to it). Two calls of New on one registry share the collectors.
//
// With controller-runtime, register on its registry, so that the
// manager's metrics endpoint serves the series, and hand the result to the
// Gate's config:
//
//	import (
//		crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
//
//		"github.com/leasehold/leasehold"
//		"github.com/leasehold/leasehold/controllerruntime"
//		leaseholdprom "github.com/leasehold/leasehold/metrics/prometheus"
//	)
//
//	m, err := leaseholdprom.New(crmetrics.Registry)
//	if err != nil {
//		return err
//	}
//	gate, err := controllerruntime.New(mgr, leasehold.Config{Lock: lock, ReleaseOnCancel: true, Metrics: m})
//
// (the module github.com/leasehold/leasehold/controllerruntime runs
// exactly this recipe in its tests, on a real manager, and shows it in
// its Example_metrics).
//
// With client-go alone, register on prometheus.DefaultRegisterer (served
// by promhttp.Handler) or on a registry of your own; see ExampleNew.
// Do not register on k8s.io/component-base's legacyregistry: it prefixes
// help texts with a stability level, so client-go's gauge registered there
// has other help text, and New refuses the clash.
package prometheus

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/leasehold/leasehold"
)

// The help texts of the two metrics client-go's leader election exports,
// word for word as k8s.io/component-base and controller-runtime register
// them: a collector is reused only when its help text is the same.
const (
	statusHelp   = "Gauge of if the reporting system is master of the relevant lease, 0 indicates backup, 1 indicates master. 'name' is the string used to identify the lease. Please make sure to group by name."
	slowPathHelp = "Total number of slow path exercised in renewing leader leases. 'name' is the string used to identify the lease. Please make sure to group by name."
)

// renewBuckets cover a renew request up to its timeout, which is at most
// RenewDeadline (10s by default).
var renewBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 20}

// takeoverBuckets cover a takeover from milliseconds (a released Lease)
// to several LeaseDurations (15s by default): a candidate that sees a
// Lease free waits up to LeaseDuration, plus a RetryPeriod, before it
// holds it.
var takeoverBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 15, 20, 30, 45, 60, 90, 120}

// Metrics implements leasehold.Metrics with Prometheus collectors. Its
// methods are safe for concurrent use, and one Metrics may serve many
// elections (each has its own name).
type Metrics struct {
	status      *prometheus.GaugeVec
	slowPath    *prometheus.CounterVec
	transitions *prometheus.CounterVec
	renew       *prometheus.HistogramVec
	renewFailed *prometheus.CounterVec
	takeover    *prometheus.HistogramVec

	seen sync.Map // election name -> struct{}: its series exist
}

var _ leasehold.Metrics = (*Metrics)(nil)

// New creates the collectors and registers them on reg. A collector of
// the same name, labels and help text already registered on reg (such as
// controller-runtime's leader_election_master_status) is reused. New fails,
// registering nothing, if reg holds a metric of one of these names with
// other labels or help text.
func New(reg prometheus.Registerer) (*Metrics, error) {
	if reg == nil {
		return nil, errors.New("leasehold/metrics/prometheus: New: the registerer is nil; pass prometheus.DefaultRegisterer, a prometheus.NewRegistry() or controller-runtime's metrics.Registry")
	}
	m := &Metrics{}
	var registered []prometheus.Collector
	fail := func(err error) (*Metrics, error) {
		for _, c := range registered {
			reg.Unregister(c)
		}
		return nil, err
	}
	var err error
	if m.status, err = register(reg, &registered, "leader_election_master_status",
		prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "leader_election_master_status", Help: statusHelp}, []string{"name"})); err != nil {
		return fail(err)
	}
	if m.slowPath, err = register(reg, &registered, "leader_election_slowpath_total",
		prometheus.NewCounterVec(prometheus.CounterOpts{Name: "leader_election_slowpath_total", Help: slowPathHelp}, []string{"name"})); err != nil {
		return fail(err)
	}
	if m.transitions, err = register(reg, &registered, "leader_election_transitions_total",
		prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "leader_election_transitions_total",
			Help: "Terms won by this process. 'name' is leasehold.Config.Name.",
		}, []string{"name"})); err != nil {
		return fail(err)
	}
	if m.renew, err = register(reg, &registered, "leader_election_renew_duration_seconds",
		prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "leader_election_renew_duration_seconds",
			Help:    "Latency of lease renew requests, successful or not. 'name' is leasehold.Config.Name.",
			Buckets: renewBuckets,
		}, []string{"name"})); err != nil {
		return fail(err)
	}
	if m.renewFailed, err = register(reg, &registered, "leader_election_renew_failures_total",
		prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "leader_election_renew_failures_total",
			Help: "Renew requests that failed. 'name' is leasehold.Config.Name.",
		}, []string{"name"})); err != nil {
		return fail(err)
	}
	if m.takeover, err = register(reg, &registered, "leader_election_takeover_duration_seconds",
		prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "leader_election_takeover_duration_seconds",
			Help:    "Time from observing a released lease to holding it. 'name' is leasehold.Config.Name.",
			Buckets: takeoverBuckets,
		}, []string{"name"})); err != nil {
		return fail(err)
	}
	return m, nil
}

// register registers c on reg and returns it, or returns the collector of
// the same description already registered there. A collector it registers
// is appended to registered.
func register[C prometheus.Collector](reg prometheus.Registerer, registered *[]prometheus.Collector, name string, c C) (C, error) {
	err := reg.Register(c)
	if err == nil {
		*registered = append(*registered, c)
		return c, nil
	}
	var zero C
	if are, ok := errors.AsType[prometheus.AlreadyRegisteredError](err); ok {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing, nil
		}
		return zero, fmt.Errorf("leasehold/metrics/prometheus: %s is already registered on this registry by a %T, not a %T that leasehold can write to: %w", name, are.ExistingCollector, c, err)
	}
	return zero, fmt.Errorf("leasehold/metrics/prometheus: register %s: %w. "+
		"Another collector of this name with other labels or help text is registered on this registry; "+
		"leasehold reuses one only if its labels are [name] and its help text is client-go's (see the package documentation)", name, err)
}

// init creates every series of the election name, at zero, the first
// time name is seen.
func (m *Metrics) init(name string) {
	if _, loaded := m.seen.LoadOrStore(name, struct{}{}); loaded {
		return
	}
	m.status.WithLabelValues(name)
	m.slowPath.WithLabelValues(name)
	m.transitions.WithLabelValues(name)
	m.renew.WithLabelValues(name)
	m.renewFailed.WithLabelValues(name)
	m.takeover.WithLabelValues(name)
}

// LeaderChanged implements leasehold.Metrics. leasehold.New calls it, with
// leading false, when it builds the elector: that creates the election's
// series.
func (m *Metrics) LeaderChanged(name string, leading bool) {
	m.init(name)
	v := 0.0
	if leading {
		v = 1
	}
	m.status.WithLabelValues(name).Set(v)
}

// SlowPath implements leasehold.Metrics.
func (m *Metrics) SlowPath(name string) {
	m.init(name)
	m.slowPath.WithLabelValues(name).Inc()
}

// Transition implements leasehold.Metrics.
func (m *Metrics) Transition(name string) {
	m.init(name)
	m.transitions.WithLabelValues(name).Inc()
}

// Renew implements leasehold.Metrics.
func (m *Metrics) Renew(name string, latency time.Duration, err error) {
	m.init(name)
	m.renew.WithLabelValues(name).Observe(latency.Seconds())
	if err != nil {
		m.renewFailed.WithLabelValues(name).Inc()
	}
}

// Takeover implements leasehold.Metrics.
func (m *Metrics) Takeover(name string, latency time.Duration) {
	m.init(name)
	m.takeover.WithLabelValues(name).Observe(latency.Seconds())
}
