package integration

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/manager"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/leasehold/leasehold"
	"github.com/leasehold/leasehold/controllerruntime"
	leaseholdprom "github.com/leasehold/leasehold/metrics/prometheus"
	"github.com/leasehold/leasehold/test/testkit"
)

// The metrics recipe of docs/operations.md, on a controller-runtime
// manager against the real control plane: the manager starts (no
// "previously registered descriptor" clash with controller-runtime's own
// leader_election_master_status), and its /metrics endpoint serves
// leasehold's series, with the status gauge at 1 while the gate leads.
func TestMetricsRecipeRealServer(t *testing.T) {
	ns := newNamespace(t)
	port := freePort(t)
	mgr, err := manager.New(cp.Config(), manager.Options{
		LeaderElection: false,
		Metrics:        metricsserver.Options{BindAddress: fmt.Sprintf("127.0.0.1:%d", port)},
	})
	if err != nil {
		t.Fatal(err)
	}
	lock := &leasehold.LeaseLock{Namespace: ns, Name: "recipe", Identity: "r1", Client: admin.CoordinationV1()}

	// The recipe, as docs/operations.md shows it (checked below).
	m, err := leaseholdprom.New(crmetrics.Registry) // sigs.k8s.io/controller-runtime/pkg/metrics
	if err != nil {
		t.Fatal(err)
	}
	gate, err := controllerruntime.New(mgr, leasehold.Config{Lock: lock, ReleaseOnCancel: true, Metrics: m})
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("manager.Start: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("manager did not stop")
		}
	})
	name := ns + "/recipe"
	want := fmt.Sprintf(`leader_election_master_status{name=%q} 1`, name)
	var body string
	testkit.Eventually(t, 30*time.Second, "the manager's /metrics shows leasehold leading", func() bool {
		select {
		case err := <-done:
			t.Fatalf("manager.Start returned %v at start (the recipe must not stop controller-runtime)", err)
		default:
		}
		body = scrape(t, port)
		return strings.Contains(body, want)
	})
	if !gate.Elector().IsLeader() {
		t.Fatal("the gate does not lead although its gauge says 1")
	}
	for _, series := range []string{
		fmt.Sprintf(`leader_election_transitions_total{name=%q} 1`, name),
		fmt.Sprintf(`leader_election_slowpath_total{name=%q}`, name),
		fmt.Sprintf(`leader_election_renew_failures_total{name=%q} 0`, name),
		`leader_election_renew_duration_seconds_bucket{name="` + name + `"`,
	} {
		if !strings.Contains(body, series) {
			t.Errorf("/metrics lacks %s", series)
		}
	}

	// The test runs the recipe exactly as the docs show it.
	doc, err := os.ReadFile("../../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	src, err := os.ReadFile("metrics_recipe_test.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{
		"m, err := leaseholdprom.New(crmetrics.Registry) // sigs.k8s.io/controller-runtime/pkg/metrics",
		"gate, err := controllerruntime.New(mgr, leasehold.Config{Lock: lock, ReleaseOnCancel: true, Metrics: m})",
	} {
		if !strings.Contains(string(doc), line) || !strings.Contains(string(src), line) {
			t.Errorf("docs/operations.md and this test must both run %q", line)
		}
	}
}

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func scrape(t *testing.T, port int) string {
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", port))
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
