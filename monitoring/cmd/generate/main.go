// Command generate writes leasehold's alert rules and dashboard, from
// package monitoring, into deploy/monitoring:
//
//	leasehold-rules.yaml   a Prometheus rules file (rule_files:)
//	prometheusrule.yaml    the same rules as a prometheus-operator PrometheusRule
//	dashboard.json         the Grafana dashboard
//
// Run it from the monitoring module (make monitoring does):
//
//	go run ./cmd/generate [-out ../deploy/monitoring]
//
// monitoring's tests fail when the files differ from what it writes. The
// other flags generate rules for other timings (monitoring.Params), as
// make demo-metrics does for its 1s scrapes:
//
//	go run ./cmd/generate -out /tmp/rules -scrape-interval 1s -shard-settle 30s
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/leasehold/leasehold/monitoring"
)

func main() {
	p := monitoring.DefaultParams()
	out := flag.String("out", "../deploy/monitoring", "directory to write the files into")
	flag.DurationVar(&p.LeaseDuration, "lease-duration", p.LeaseDuration, "LeaseDuration of the elections and shard groups")
	flag.DurationVar(&p.RenewDeadline, "renew-deadline", p.RenewDeadline, "RenewDeadline of the elections and shard groups")
	flag.DurationVar(&p.ScrapeInterval, "scrape-interval", p.ScrapeInterval, "Prometheus's scrape interval")
	flag.DurationVar(&p.ShardSettle, "shard-settle", p.ShardSettle, "how long shards may stay unowned or unbalanced before an alert")
	flag.StringVar(&p.Selector, "selector", p.Selector, `matchers added to every selector, e.g. job="my-controller"`)
	flag.Parse()
	files, err := monitoring.Files(p)
	if err != nil {
		fmt.Fprintln(os.Stderr, "generate:", err)
		os.Exit(1)
	}
	for _, f := range files {
		path := filepath.Join(*out, f.Name)
		if err := os.WriteFile(path, f.Data, 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "generate:", err)
			os.Exit(1)
		}
		fmt.Println("wrote", path)
	}
}
