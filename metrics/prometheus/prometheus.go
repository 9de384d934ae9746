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
// With leasehold.TermMetrics, which Metrics also implements:
//
//	leasehold_yields_total{name,outcome}     handoffs asked for (Yield, preferred holder): outcome is
//	                                         requested, then completed, refused or failed
//	leasehold_step_down_timeouts_total{name} step-downs whose work outlived StepDownTimeout
//	leasehold_work_outlived_total{name}      lost terms whose work outlived the safety margin
//	leasehold_renew_headroom_seconds{name}   histogram: RenewDeadline left at each successful renewal
//
// With leasehold.CandidacyMetrics, for coordinated elections
// (leasehold.NewCoordinated), from their first report on:
//
//	leasehold_candidacy_state{name,state}    1 for the current state, 0 for the others: candidate,
//	                                         unsupported, no-controller, withdrawn
//
// name is leasehold.Config.Name. Every series of an election appears, at
// zero, as soon as its elector is built (leasehold.New), before its first
// event, so that rate() and increase() see the first increment.
//
// For shard groups (shard.Config.Metrics, shard.Metrics):
//
//	leasehold_shards{group}                                 the group's number of shards
//	leasehold_shards_owned{group}                           shards whose work runs in this process
//	leasehold_shard_moves_total{group,cause}                shards that moved here: join, leave, crash, rebalance
//	leasehold_shard_handover_duration_seconds{group,cause}  histogram: shard targeted here to its work started
//	leasehold_shard_members{group}                          members this process sees, itself included
//
// group is shard.Config.Namespace/Group; its series appear, at zero, from
// shard.New on. No label takes a value per shard, unless New is given
// PerShard: then leasehold_shard_owned{group,shard} is 1 while the shard's
// work runs here.
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
	"github.com/leasehold/leasehold/shard"
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

// renewHeadroomBuckets resolve a renewal's headroom around the defaults:
// RenewDeadline 10s, renewals every RetryPeriod 2s, so 8s on a quiet API
// server; the alert rules count renewals at or below 2.5s (a quarter of
// the default RenewDeadline). 0 holds a renewal that came back after its
// deadline.
var renewHeadroomBuckets = []float64{0, .5, 1, 2, 2.5, 3, 4, 5, 6, 7, 8, 9, 10, 15, 30, 60}

// handoverBuckets cover a shard's handover, from milliseconds (a leave,
// two writes) to the time a shard's work takes to return.
var handoverBuckets = []float64{.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 15, 20, 30, 60, 120}

// Metrics implements leasehold.Metrics, leasehold.TermMetrics and
// shard.Metrics with Prometheus collectors. Its methods are safe for
// concurrent use, and one Metrics may serve many elections and shard
// groups (each has its own name).
type Metrics struct {
	status      *prometheus.GaugeVec
	slowPath    *prometheus.CounterVec
	transitions *prometheus.CounterVec
	renew       *prometheus.HistogramVec
	renewFailed *prometheus.CounterVec
	takeover    *prometheus.HistogramVec

	yields          *prometheus.CounterVec
	stepDownTimeout *prometheus.CounterVec
	workOutlived    *prometheus.CounterVec
	renewHeadroom   *prometheus.HistogramVec
	candidacy       *prometheus.GaugeVec

	shards      *prometheus.GaugeVec
	shardsOwned *prometheus.GaugeVec
	shardMoves  *prometheus.CounterVec
	handover    *prometheus.HistogramVec
	members     *prometheus.GaugeVec
	shardOwned  *prometheus.GaugeVec // nil unless PerShard

	seen   sync.Map // election name -> struct{}: its series exist
	groups sync.Map // shard group -> struct{}: its series exist
}

var (
	_ leasehold.Metrics          = (*Metrics)(nil)
	_ leasehold.TermMetrics      = (*Metrics)(nil)
	_ leasehold.CandidacyMetrics = (*Metrics)(nil)
	_ shard.Metrics              = (*Metrics)(nil)
)

// Option configures New.
type Option func(*options)

type options struct {
	perShard bool
}

// PerShard adds leasehold_shard_owned{group,shard}: 1 while the shard's
// work runs in this process, 0 once it stopped. One series per shard a
// process ever ran: up to Shards series per group in each process, so it
// is off by default.
func PerShard() Option { return func(o *options) { o.perShard = true } }

// yieldOutcomes are the outcomes of leasehold.TermMetrics.Yield, whose
// series exist from the start.
var yieldOutcomes = []string{leasehold.YieldRequested, leasehold.YieldCompleted, leasehold.YieldRefused, leasehold.YieldFailed}

// New creates the collectors and registers them on reg. A collector of
// the same name, labels and help text already registered on reg (such as
// controller-runtime's leader_election_master_status) is reused. New fails,
// registering nothing, if reg holds a metric of one of these names with
// other labels or help text.
func New(reg prometheus.Registerer, opts ...Option) (*Metrics, error) {
	if reg == nil {
		return nil, errors.New("leasehold/metrics/prometheus: New: the registerer is nil; pass prometheus.DefaultRegisterer, a prometheus.NewRegistry() or controller-runtime's metrics.Registry")
	}
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	m := &Metrics{}
	var registered []prometheus.Collector
	fail := func(err error) (*Metrics, error) {
		for _, c := range registered {
			reg.Unregister(c)
		}
		return nil, err
	}
	counter := func(dst **prometheus.CounterVec, name, help string, labels ...string) error {
		var err error
		*dst, err = register(reg, &registered, name, prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels))
		return err
	}
	gauge := func(dst **prometheus.GaugeVec, name, help string, labels ...string) error {
		var err error
		*dst, err = register(reg, &registered, name, prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, labels))
		return err
	}
	histogram := func(dst **prometheus.HistogramVec, name, help string, buckets []float64, labels ...string) error {
		var err error
		*dst, err = register(reg, &registered, name, prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets}, labels))
		return err
	}
	steps := []func() error{
		func() error { return gauge(&m.status, "leader_election_master_status", statusHelp, "name") },
		func() error { return counter(&m.slowPath, "leader_election_slowpath_total", slowPathHelp, "name") },
		func() error {
			return counter(&m.transitions, "leader_election_transitions_total",
				"Terms won by this process. 'name' is leasehold.Config.Name.", "name")
		},
		func() error {
			return histogram(&m.renew, "leader_election_renew_duration_seconds",
				"Latency of lease renew requests, successful or not. 'name' is leasehold.Config.Name.", renewBuckets, "name")
		},
		func() error {
			return counter(&m.renewFailed, "leader_election_renew_failures_total",
				"Renew requests that failed. 'name' is leasehold.Config.Name.", "name")
		},
		func() error {
			return histogram(&m.takeover, "leader_election_takeover_duration_seconds",
				"Time from observing a released lease to holding it. 'name' is leasehold.Config.Name.", takeoverBuckets, "name")
		},
		func() error {
			return counter(&m.yields, "leasehold_yields_total",
				"Handoffs this process was asked for (Elector.Yield or the preferred-holder annotation), by outcome: requested when asked, then completed, refused or failed. 'name' is leasehold.Config.Name.", "name", "outcome")
		},
		func() error {
			return counter(&m.stepDownTimeout, "leasehold_step_down_timeouts_total",
				"Step-downs whose work did not return within StepDownTimeout. 'name' is leasehold.Config.Name.", "name")
		},
		func() error {
			return counter(&m.workOutlived, "leasehold_work_outlived_total",
				"Lost terms whose work did not return within the safety margin: another leader may have started while it ran. 'name' is leasehold.Config.Name.", "name")
		},
		func() error {
			return histogram(&m.renewHeadroom, "leasehold_renew_headroom_seconds",
				"What was left of RenewDeadline at each successful renewal: RenewDeadline minus the time from the previous successful write's send to this renewal's answer. 'name' is leasehold.Config.Name.", renewHeadroomBuckets, "name")
		},
		func() error {
			return gauge(&m.candidacy, "leasehold_candidacy_state",
				"1 for the current state of this process's candidacy in a coordinated election (leasehold.NewCoordinated), 0 for the others: candidate, unsupported, no-controller or withdrawn. 'name' is leasehold.Config.Name.", "name", "state")
		},
		func() error {
			return gauge(&m.shards, "leasehold_shards",
				"The number of shards of the shard group (shard.Config.Shards). 'group' is namespace/group.", "group")
		},
		func() error {
			return gauge(&m.shardsOwned, "leasehold_shards_owned",
				"Shards of the group whose work runs in this process. 'group' is namespace/group.", "group")
		},
		func() error {
			return counter(&m.shardMoves, "leasehold_shard_moves_total",
				"Shards that moved to this process, counted when their work starts here, by cause: join, leave, crash or rebalance. 'group' is namespace/group.", "group", "cause")
		},
		func() error {
			return histogram(&m.handover, "leasehold_shard_handover_duration_seconds",
				"Time from this process seeing a shard targeted at it to the shard's work starting here, by the move's cause. 'group' is namespace/group.", handoverBuckets, "group", "cause")
		},
		func() error {
			return gauge(&m.members, "leasehold_shard_members",
				"Members of the shard group this process sees, itself included while its membership is live. 'group' is namespace/group.", "group")
		},
	}
	if o.perShard {
		steps = append(steps, func() error {
			return gauge(&m.shardOwned, "leasehold_shard_owned",
				"1 while the shard's work runs in this process, 0 once it stopped (leaseholdprom.PerShard). 'group' is namespace/group.", "group", "shard")
		})
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return fail(err)
		}
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
	for _, o := range yieldOutcomes {
		m.yields.WithLabelValues(name, o)
	}
	m.stepDownTimeout.WithLabelValues(name)
	m.workOutlived.WithLabelValues(name)
	m.renewHeadroom.WithLabelValues(name)
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

// Yield implements leasehold.TermMetrics: leasehold_yields_total{name,outcome}.
func (m *Metrics) Yield(name, outcome string) {
	m.init(name)
	m.yields.WithLabelValues(name, outcome).Inc()
}

// StepDownTimeout implements leasehold.TermMetrics.
func (m *Metrics) StepDownTimeout(name string) {
	m.init(name)
	m.stepDownTimeout.WithLabelValues(name).Inc()
}

// WorkOutlived implements leasehold.TermMetrics.
func (m *Metrics) WorkOutlived(name string) {
	m.init(name)
	m.workOutlived.WithLabelValues(name).Inc()
}

// RenewHeadroom implements leasehold.TermMetrics.
func (m *Metrics) RenewHeadroom(name string, headroom time.Duration) {
	m.init(name)
	m.renewHeadroom.WithLabelValues(name).Observe(headroom.Seconds())
}

// Candidacy implements leasehold.CandidacyMetrics: the state's series is
// 1, the other states' 0. The series of an election appear at its first
// report, since only coordinated elections have a candidacy.
func (m *Metrics) Candidacy(name, state string) {
	m.init(name)
	for _, s := range leasehold.CandidacyStates() {
		v := 0.0
		if s == state {
			v = 1
		}
		m.candidacy.WithLabelValues(name, s).Set(v)
	}
}
