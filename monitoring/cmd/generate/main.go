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
// monitoring's tests fail when the files differ from what it writes.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/leasehold/leasehold/monitoring"
)

func main() {
	out := flag.String("out", "../deploy/monitoring", "directory to write the files into")
	flag.Parse()
	files, err := monitoring.Files(monitoring.DefaultParams())
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
