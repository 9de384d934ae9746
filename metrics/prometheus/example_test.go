package prometheus_test

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/leasehold/leasehold"
	"github.com/leasehold/leasehold/leaseholdtest"
	leaseholdprom "github.com/leasehold/leasehold/metrics/prometheus"
)

// With client-go alone: register on a registry (here a new one;
// prometheus.DefaultRegisterer works the same) and serve it. Every series
// of the election exists from leasehold.New on, at zero. With
// controller-runtime, register on its metrics.Registry instead (see the
// package documentation).
func ExampleNew() {
	reg := prometheus.NewRegistry()
	m, err := leaseholdprom.New(reg)
	if err != nil {
		panic(err)
	}
	http.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))

	client := leaseholdtest.NewServer().Client("a") // clientset.CoordinationV1() in a real program
	_, err = leasehold.New(leasehold.Config{
		Lock:      &leasehold.LeaseLock{Namespace: "my-system", Name: "my-controller", Identity: "a", Client: client},
		Metrics:   m,
		Callbacks: leasehold.Callbacks{OnStartedLeading: func(ctx context.Context) { <-ctx.Done() }},
	})
	if err != nil {
		panic(err)
	}

	fams, err := reg.Gather()
	if err != nil {
		panic(err)
	}
	var names []string
	for _, f := range fams {
		for _, s := range f.GetMetric() {
			var labels []string
			for _, l := range s.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			names = append(names, fmt.Sprintf("%s{%s}", f.GetName(), strings.Join(labels, ",")))
		}
	}
	slices.Sort(names)
	for _, n := range names {
		fmt.Println(n)
	}
	// Output:
	// leader_election_master_status{name="my-system/my-controller"}
	// leader_election_renew_duration_seconds{name="my-system/my-controller"}
	// leader_election_renew_failures_total{name="my-system/my-controller"}
	// leader_election_slowpath_total{name="my-system/my-controller"}
	// leader_election_takeover_duration_seconds{name="my-system/my-controller"}
	// leader_election_transitions_total{name="my-system/my-controller"}
	// leasehold_renew_headroom_seconds{name="my-system/my-controller"}
	// leasehold_step_down_timeouts_total{name="my-system/my-controller"}
	// leasehold_work_outlived_total{name="my-system/my-controller"}
	// leasehold_yields_total{name="my-system/my-controller",outcome="completed"}
	// leasehold_yields_total{name="my-system/my-controller",outcome="failed"}
	// leasehold_yields_total{name="my-system/my-controller",outcome="refused"}
	// leasehold_yields_total{name="my-system/my-controller",outcome="requested"}
}
