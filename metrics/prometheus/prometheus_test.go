package prometheus_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/leasehold/leasehold"
	"github.com/leasehold/leasehold/leaseholdtest"
	leaseholdprom "github.com/leasehold/leasehold/metrics/prometheus"
)

// families are the names New registers.
var families = []string{
	"leader_election_master_status",
	"leader_election_slowpath_total",
	"leader_election_transitions_total",
	"leader_election_renew_duration_seconds",
	"leader_election_renew_failures_total",
	"leader_election_takeover_duration_seconds",
	"leasehold_yields_total",
	"leasehold_step_down_timeouts_total",
	"leasehold_work_outlived_total",
	"leasehold_renew_headroom_seconds",
}

// scrape serves reg's /metrics through promhttp, in memory, and parses
// the answer with the Prometheus text parser, as a scraper would.
func scrape(t *testing.T, reg prometheus.Gatherer) map[string]*dto.MetricFamily {
	t.Helper()
	rec := httptest.NewRecorder()
	promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.HTTPErrorOnError}).
		ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("GET /metrics: %d %s", rec.Code, rec.Body)
	}
	body := rec.Body.String()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parse /metrics: %v\n%s", err, body)
	}
	return fams
}

func value(t *testing.T, fams map[string]*dto.MetricFamily, name string) float64 {
	t.Helper()
	v, ok := lookup(fams, name, "ns/lock")
	if !ok {
		t.Fatalf("metric %s has no series for ns/lock", name)
	}
	return v
}

// lookup returns the value of the series election of a metric (a
// histogram's sample count), or false.
func lookup(fams map[string]*dto.MetricFamily, name, election string) (float64, bool) {
	m, ok := series(fams, name, election)
	if !ok {
		return 0, false
	}
	switch {
	case m.Gauge != nil:
		return m.Gauge.GetValue(), true
	case m.Counter != nil:
		return m.Counter.GetValue(), true
	case m.Histogram != nil:
		return float64(m.Histogram.GetSampleCount()), true
	}
	return 0, false
}

// series returns the series election of a metric.
func series(fams map[string]*dto.MetricFamily, name, election string) (*dto.Metric, bool) {
	f, ok := fams[name]
	if !ok {
		return nil, false
	}
	for _, m := range f.Metric {
		for _, l := range m.Label {
			if l.GetName() == "name" && l.GetValue() == election {
				return m, true
			}
		}
	}
	return nil, false
}

// TestScrapeMetrics runs an elector through a real lost race and a term,
// on virtual time, and reads every metric back through the /metrics
// handler: the slow path is counted because the library took it (a
// takeover that got 409 Conflict and re-read), exactly once.
func TestScrapeMetrics(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		reg := prometheus.NewRegistry()
		m, err := leaseholdprom.New(reg)
		if err != nil {
			t.Fatal(err)
		}

		srv := leaseholdtest.NewServer()
		// A released Lease: "a" takes it over at once, with an Update.
		released := srv.Put(&coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "lock"},
			Spec:       coordinationv1.LeaseSpec{LeaseDurationSeconds: ptr.To[int32](2), LeaseTransitions: ptr.To[int32](0)},
		})
		// Another writer changes it just before a's first takeover reaches
		// the server: that Update gets 409 Conflict, a re-reads (the slow
		// path) and takes the newer version over.
		var raced atomic.Int32
		srv.AddHook(func(_ context.Context, req leaseholdtest.Request) error {
			if req.Client == "a" && req.Verb == "update" && raced.Add(1) == 1 {
				l := srv.Lease("ns", "lock")
				l.Spec.LeaseTransitions = ptr.To[int32](1)
				srv.Put(l)
			}
			return nil
		})
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		leading := make(chan struct{})
		cfg := leasehold.Config{
			Lock:          &leasehold.LeaseLock{Namespace: "ns", Name: "lock", Identity: "a", Client: srv.Client("a")},
			LeaseDuration: 2 * time.Second, RenewDeadline: 1500 * time.Millisecond, RetryPeriod: 100 * time.Millisecond,
			Metrics:   m,
			Callbacks: leasehold.Callbacks{OnStartedLeading: func(ctx context.Context) { close(leading); <-ctx.Done() }},
		}
		e, err := leasehold.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- e.Run(ctx) }()
		synctest.Wait()
		select {
		case <-leading:
		default:
			t.Fatal("a does not lead once every goroutine has settled")
		}
		if n := raced.Load(); n != 2 {
			t.Fatalf("a sent %d takeover updates, want the one that lost the race and the one that won", n)
		}
		// Two renewals, exactly: RetryPeriod after the takeover, and again.
		time.Sleep(2*cfg.RetryPeriod + cfg.RetryPeriod/2)
		synctest.Wait()
		fams := scrape(t, reg)
		if got := value(t, fams, "leader_election_master_status"); got != 1 {
			t.Errorf("master_status while leading = %v, want 1", got)
		}
		if got := value(t, fams, "leader_election_renew_duration_seconds"); got != 2 {
			t.Errorf("renew_duration_seconds count after two RetryPeriods = %v, want 2", got)
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("Run: %v", err)
		}
		fams = scrape(t, reg)
		if got := value(t, fams, "leader_election_master_status"); got != 0 {
			t.Errorf("master_status after stepping down = %v, want 0", got)
		}
		if got := value(t, fams, "leader_election_slowpath_total"); got != 1 {
			t.Errorf("slowpath_total = %v, want 1: one takeover lost its race and re-read", got)
		}
		if got := value(t, fams, "leader_election_transitions_total"); got != 1 {
			t.Errorf("transitions_total = %v, want 1", got)
		}
		if got := value(t, fams, "leader_election_takeover_duration_seconds"); got != 1 {
			t.Errorf("takeover_duration_seconds count = %v, want 1 (a took over a released Lease once)", got)
		}
		if got := value(t, fams, "leader_election_renew_failures_total"); got != 0 {
			t.Errorf("renew_failures_total = %v, want 0", got)
		}
		if l := srv.Lease("ns", "lock"); l.ResourceVersion == released.ResourceVersion || l.Spec.LeaseTransitions == nil || *l.Spec.LeaseTransitions != 2 {
			t.Errorf("Lease %+v: want a's takeover of the other writer's version (leaseTransitions 2)", l.Spec)
		}
	})
}

// Every series of an election exists, at zero, once its elector is built:
// before its first event, so that the first increment is a visible change.
func TestSeriesExistAtZeroBeforeTheFirstEvent(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := leaseholdprom.New(reg)
	if err != nil {
		t.Fatal(err)
	}
	srv := leaseholdtest.NewServer()
	for _, lock := range []string{"lock", "other"} {
		if _, err := leasehold.New(leasehold.Config{
			Lock:      &leasehold.LeaseLock{Namespace: "ns", Name: lock, Identity: "a", Client: srv.Client("a")},
			Metrics:   m,
			Callbacks: leasehold.Callbacks{OnStartedLeading: func(context.Context) {}},
		}); err != nil {
			t.Fatal(err)
		}
	}
	fams := scrape(t, reg)
	for _, election := range []string{"ns/lock", "ns/other"} {
		for _, name := range families {
			v, ok := lookup(fams, name, election)
			if !ok {
				t.Errorf("%s{name=%q} does not exist before the election's first event", name, election)
			} else if v != 0 {
				t.Errorf("%s{name=%q} = %v before any event, want 0", name, election, v)
			}
		}
	}
}

// An expiry takeover waits about LeaseDuration: it must land in a finite
// bucket, with room for longer LeaseDurations, not in +Inf.
func TestTakeoverBucketsReachLeaseDuration(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := leaseholdprom.New(reg)
	if err != nil {
		t.Fatal(err)
	}
	expiry := leasehold.DefaultLeaseDuration + leasehold.DefaultRetryPeriod
	m.Takeover("ns/lock", expiry)
	h, ok := series(scrape(t, reg), "leader_election_takeover_duration_seconds", "ns/lock")
	if !ok || h.Histogram == nil {
		t.Fatal("no takeover histogram for ns/lock")
	}
	var top float64
	inFinite := false
	for _, b := range h.Histogram.Bucket {
		top = max(top, b.GetUpperBound())
		if b.GetCumulativeCount() == 1 && b.GetUpperBound() <= 2*expiry.Seconds() {
			inFinite = true
		}
	}
	if !inFinite {
		t.Errorf("a takeover of %v is in no finite bucket up to twice its length: buckets end at %vs", expiry, top)
	}
	if top < 4*leasehold.DefaultLeaseDuration.Seconds() {
		t.Errorf("the largest takeover bucket is %vs, want at least four default LeaseDurations (%v)", top, 4*leasehold.DefaultLeaseDuration)
	}
}

// clientGoStatusGauge is leader_election_master_status exactly as
// controller-runtime's metrics package (and k8s.io/component-base, without
// its stability prefix) declares it and registers it on its registry.
func clientGoStatusGauge() *prometheus.GaugeVec {
	return prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "leader_election_master_status",
		Help: "Gauge of if the reporting system is master of the relevant lease, 0 indicates backup, 1 indicates master. 'name' is the string used to identify the lease. Please make sure to group by name.",
	}, []string{"name"})
}

// The clash of issue "metrics with controller-runtime": a registry that
// already holds client-go's leader_election_master_status, as
// controller-runtime's metrics.Registry does. New reuses that gauge and
// writes leasehold's status into it.
func TestNewReusesClientGosStatusGauge(t *testing.T) {
	reg := prometheus.NewRegistry()
	theirs := clientGoStatusGauge()
	reg.MustRegister(theirs)
	m, err := leaseholdprom.New(reg)
	if err != nil {
		t.Fatalf("New on a registry holding client-go's gauge: %v", err)
	}
	m.LeaderChanged("ns/lock", true)
	g, err := theirs.GetMetricWithLabelValues("ns/lock")
	if err != nil {
		t.Fatal(err)
	}
	var out dto.Metric
	if err := g.Write(&out); err != nil {
		t.Fatal(err)
	}
	if out.GetGauge().GetValue() != 1 {
		t.Errorf("the registered gauge reads %v for a leading election, want 1: New did not write into it", out.GetGauge().GetValue())
	}
	fams := scrape(t, reg)
	for _, name := range families {
		if _, ok := lookup(fams, name, "ns/lock"); !ok {
			t.Errorf("%s is not served", name)
		}
	}
}

// A metric of one of leasehold's names with other help text or labels is
// refused, with an error naming the metric, and New leaves nothing of its
// own registered.
func TestNewRefusesAClashAndRegistersNothing(t *testing.T) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "leader_election_takeover_duration_seconds", Help: "someone else's",
	}, []string{"name"}))
	_, err := leaseholdprom.New(reg)
	if err == nil || !strings.Contains(err.Error(), "leader_election_takeover_duration_seconds") {
		t.Fatalf("New = %v, want an error naming leader_election_takeover_duration_seconds", err)
	}
	// Everything New registered before the clash was taken back: the
	// same descriptions (read from a fresh registry) register anew
	// instead of being reported as already registered.
	fresh := prometheus.NewRegistry()
	m, err := leaseholdprom.New(fresh)
	if err != nil {
		t.Fatal(err)
	}
	m.LeaderChanged("ns/lock", false)
	fams, err := fresh.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() == "leader_election_takeover_duration_seconds" {
			continue
		}
		c := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: f.GetName(), Help: f.GetHelp()}, []string{"name"})
		if err := reg.Register(c); err != nil {
			t.Errorf("%s is still registered after the failed New: %v", f.GetName(), err)
		}
	}
	if _, err := leaseholdprom.New(nil); err == nil {
		t.Error("New(nil) succeeded")
	}
}

// Two Metrics on one registry (two Gates, or a restart of the wiring in
// one process) share the collectors instead of failing.
func TestSecondNewOnOneRegistryShares(t *testing.T) {
	reg := prometheus.NewRegistry()
	m1, err := leaseholdprom.New(reg)
	if err != nil {
		t.Fatal(err)
	}
	m2, err := leaseholdprom.New(reg)
	if err != nil {
		t.Fatalf("second New on one registry: %v", err)
	}
	m1.Transition("ns/lock")
	m2.Transition("ns/lock")
	if got := value(t, scrape(t, reg), "leader_election_transitions_total"); got != 2 {
		t.Errorf("transitions_total = %v after one transition through each Metrics, want 2", got)
	}
}
