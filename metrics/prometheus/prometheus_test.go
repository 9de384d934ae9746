package prometheus_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
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

// scrape GETs a real /metrics endpoint and parses it with the Prometheus
// text parser.
func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytesReader(body))
	if err != nil {
		t.Fatalf("parse /metrics: %v\n%s", err, body)
	}
	return fams
}

func value(t *testing.T, fams map[string]*dto.MetricFamily, name string) float64 {
	t.Helper()
	v, ok := lookup(fams, name)
	if !ok {
		t.Fatalf("metric %s has no series for ns/lock", name)
	}
	return v
}

// lookup returns the value of the ns/lock series of a metric, or false.
func lookup(fams map[string]*dto.MetricFamily, name string) (float64, bool) {
	f, ok := fams[name]
	if !ok {
		return 0, false
	}
	for _, m := range f.Metric {
		for _, l := range m.Label {
			if l.GetName() == "name" && l.GetValue() == "ns/lock" {
				switch {
				case m.Gauge != nil:
					return m.Gauge.GetValue(), true
				case m.Counter != nil:
					return m.Counter.GetValue(), true
				case m.Histogram != nil:
					return float64(m.Histogram.GetSampleCount()), true
				}
			}
		}
	}
	return 0, false
}

// TestScrapeMetrics runs an elector through a real lost race and a term,
// and reads every metric back from a real /metrics endpoint: the slow path
// is counted because the library took it (a takeover that got 409 Conflict
// and re-read), exactly once.
func TestScrapeMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := leaseholdprom.New(reg)
	if err != nil {
		t.Fatal(err)
	}
	web := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer web.Close()

	srv := leaseholdtest.NewServer()
	// A released Lease: "a" takes it over at once, with an Update.
	released := srv.Put(&coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "lock"},
		Spec:       coordinationv1.LeaseSpec{LeaseDurationSeconds: ptr.To[int32](2), LeaseTransitions: ptr.To[int32](0)},
	})
	// Another writer changes it just before a's first takeover reaches the
	// server: that Update gets 409 Conflict, a re-reads (the slow path)
	// and takes the newer version over.
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
	e, err := leasehold.New(leasehold.Config{
		Lock:          &leasehold.LeaseLock{Namespace: "ns", Name: "lock", Identity: "a", Client: srv.Client("a")},
		LeaseDuration: 2 * time.Second, RenewDeadline: 1500 * time.Millisecond, RetryPeriod: 100 * time.Millisecond,
		Metrics:   m,
		Callbacks: leasehold.Callbacks{OnStartedLeading: func(ctx context.Context) { close(leading); <-ctx.Done() }},
	})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	select {
	case <-leading:
	case <-time.After(10 * time.Second):
		t.Fatal("a never led")
	}
	if n := raced.Load(); n < 2 {
		t.Fatalf("a sent %d takeover updates, want the one that lost the race and the one that won", n)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		fams := scrape(t, web.URL)
		status, _ := lookup(fams, "leader_election_master_status")
		renews, _ := lookup(fams, "leader_election_renew_duration_seconds")
		if status == 1 && renews >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("master_status never 1 with renewals recorded")
		}
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	fams := scrape(t, web.URL)
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
	if got, _ := lookup(fams, "leader_election_renew_failures_total"); got != 0 {
		t.Errorf("renew_failures_total = %v, want 0", got)
	}
	if l := srv.Lease("ns", "lock"); l.ResourceVersion == released.ResourceVersion || l.Spec.LeaseTransitions == nil || *l.Spec.LeaseTransitions != 2 {
		t.Errorf("Lease %+v: want a's takeover of the other writer's version (leaseTransitions 2)", l.Spec)
	}
}

func TestDoubleRegistrationFails(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := leaseholdprom.New(reg); err != nil {
		t.Fatal(err)
	}
	if _, err := leaseholdprom.New(reg); err == nil {
		t.Fatal("second registration on one registry succeeded")
	}
}
