//go:build tools

// Package controlplane pins the control-plane binaries that build.sh compiles
// for envtest. The blank import keeps k8s.io/kubernetes/cmd/kube-apiserver
// (and everything it needs) in go.mod and go.sum under `go mod tidy`; the
// tools build tag keeps the package itself out of every normal build.
package controlplane

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
)
