package prometheus_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

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

func TestScrapeMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := leaseholdprom.New(reg)
	if err != nil {
		t.Fatal(err)
	}
	web := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer web.Close()

	srv := leaseholdtest.NewServer()
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
	<-leading
	deadline := time.Now().Add(5 * time.Second)
	for {
		fams := scrape(t, web.URL)
		status, _ := lookup(fams, "leader_election_master_status")
		renews, _ := lookup(fams, "leader_election_renew_duration_seconds")
		if status == 1 && renews >= 2 {
			if got := value(t, fams, "leader_election_transitions_total"); got != 1 {
				t.Fatalf("transitions = %v, want 1", got)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("master_status never 1 with renewals recorded")
		}
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	<-done
	fams := scrape(t, web.URL)
	if got := value(t, fams, "leader_election_master_status"); got != 0 {
		t.Fatalf("master_status after stepping down = %v, want 0", got)
	}
	if _, ok := fams["leader_election_slowpath_total"]; !ok {
		// Counter vectors appear once a series exists; force one.
		m.SlowPath("ns/lock")
		fams = scrape(t, web.URL)
	}
	if got := value(t, fams, "leader_election_slowpath_total"); got < 1 {
		t.Fatalf("slowpath_total = %v", got)
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
