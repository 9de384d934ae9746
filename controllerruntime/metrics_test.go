package controllerruntime_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/leasehold/leasehold"
	"github.com/leasehold/leasehold/leaseholdtest"
)

// scrapeCR serves controller-runtime's registry as the manager's metrics
// endpoint does (promhttp over metrics.Registry), in memory, and parses
// the answer as a scraper would.
func scrapeCR(t *testing.T) map[string]*dto.MetricFamily {
	t.Helper()
	rec := httptest.NewRecorder()
	promhttp.HandlerFor(crmetrics.Registry, promhttp.HandlerOpts{ErrorHandling: promhttp.HTTPErrorOnError}).
		ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("GET /metrics: %d %s", rec.Code, rec.Body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(rec.Body.String()))
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return fams
}

// seriesValue returns the value of a metric's series name=election (a
// histogram's sample count), or false.
func seriesValue(fams map[string]*dto.MetricFamily, metric, election string) (float64, bool) {
	for _, m := range fams[metric].GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() != "name" || l.GetValue() != election {
				continue
			}
			switch {
			case m.Gauge != nil:
				return m.GetGauge().GetValue(), true
			case m.Counter != nil:
				return m.GetCounter().GetValue(), true
			case m.Histogram != nil:
				return float64(m.GetHistogram().GetSampleCount()), true
			}
		}
	}
	return 0, false
}

// recipeRuns counts the runs of TestMetricsRecipeOnAControllerRuntimeManager.
var recipeRuns atomic.Int32

// The issue "metrics with controller-runtime": this test binary imports
// controller-runtime's metrics package, whose init registers client-go's
// leader_election_master_status on metrics.Registry, and runs the recipe
// of Example_metrics (newGateWithMetrics) on a real manager. It must not
// clash; every series exists from the start, and the manager's endpoint
// serves leasehold's status while the Gate leads, and after.
func TestMetricsRecipeOnAControllerRuntimeManager(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv := leaseholdtest.NewServer()
		mgr, err := manager.New(&rest.Config{Host: "http://127.0.0.1:1"}, manager.Options{
			LeaderElection:         false,
			Metrics:                metricsserver.Options{BindAddress: "0"},
			HealthProbeBindAddress: "0",
			Controller:             config.Controller{SkipNameValidation: ptr.To(true)},
		})
		if err != nil {
			t.Fatal(err)
		}
		// metrics.Registry lives as long as the process: a fresh election
		// name per run keeps -count=N runs apart.
		lock := fmt.Sprintf("recipe-%d", recipeRuns.Add(1))
		gate, err := newGateWithMetrics(mgr, &leasehold.LeaseLock{Namespace: "default", Name: lock, Identity: "a", Client: srv.Client("a")})
		if err != nil {
			t.Fatalf("the recipe on controller-runtime's registry: %v", err)
		}
		election := "default/" + lock
		fams := scrapeCR(t)
		for _, metric := range []string{
			"leader_election_master_status", "leader_election_slowpath_total", "leader_election_transitions_total",
			"leader_election_renew_duration_seconds", "leader_election_renew_failures_total", "leader_election_takeover_duration_seconds",
		} {
			if v, ok := seriesValue(fams, metric, election); !ok || v != 0 {
				t.Errorf("%s{name=%q} before the manager starts = %v (present: %v), want 0", metric, election, v, ok)
			}
		}

		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		done := make(chan error, 1)
		go func() { done <- mgr.Start(ctx) }()
		select {
		case <-gate.Elected():
		case <-time.After(time.Minute):
			t.Fatal("the Gate did not lead")
		}
		time.Sleep(leasehold.DefaultRetryPeriod + time.Second) // one renewal
		synctest.Wait()
		fams = scrapeCR(t)
		for metric, want := range map[string]float64{
			"leader_election_master_status":          1,
			"leader_election_transitions_total":      1,
			"leader_election_renew_duration_seconds": 1,
		} {
			if v, _ := seriesValue(fams, metric, election); v != want {
				t.Errorf("%s{name=%q} while leading = %v, want %v", metric, election, v, want)
			}
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("mgr.Start = %v", err)
		}
		if v, _ := seriesValue(scrapeCR(t), "leader_election_master_status", election); v != 0 {
			t.Errorf("leader_election_master_status after the manager stopped = %v, want 0", v)
		}
	})
}
