//go:build tools

// The Prometheus binaries hack/prometheus/build.sh builds from source, at
// the version of github.com/prometheus/prometheus this module's tests
// parse PromQL with. The blank imports keep them, and everything they
// need, in go.mod and go.sum under `go mod tidy`; the tools build tag
// keeps this file out of every normal build.
package monitoring

import (
	_ "github.com/prometheus/prometheus/cmd/prometheus"
	_ "github.com/prometheus/prometheus/cmd/promtool"
)
