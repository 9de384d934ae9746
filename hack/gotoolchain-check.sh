#!/usr/bin/env bash
# Proves that every module users import works with the Go toolchain its
# `go` directive names, and that the directive is the lowest possible:
#
#   1. the directive equals the highest `go` directive among the module's
#      dependencies (go refuses a lower one, so anything higher is a
#      stricter minimum than needed), and is no stricter than client-go's;
#   2. that exact toolchain, fetched through the module proxy as the
#      golang.org/toolchain module (GOTOOLCHAIN=go1.X.Y), vets the module
#      and passes its unit tests.
#
# Modules: the root (leaseholdtest is one of its packages),
# metrics/prometheus and controllerruntime. Run from anywhere:
#
#   hack/gotoolchain-check.sh              # all three
#   hack/gotoolchain-check.sh controllerruntime
#
# The race detector is left to `make unit`, which runs the same tests with
# the local toolchain; here -race would only double the time.
set -euo pipefail

cd "$(dirname "$0")/.."
GO=${GO:-go}
modules=("$@")
if [ ${#modules[@]} -eq 0 ]; then
	modules=(. metrics/prometheus controllerruntime)
fi

# vmax prints the highest of the Go versions given on stdin.
vmax() { grep -v '^$' | sort -V | tail -n 1; }

# toolchain maps a go directive to its toolchain name: "1.26" and "1.26.0"
# are both released as go1.26.0.
toolchain() {
	case "$1" in
	*.*.*) echo "go$1" ;;
	*) echo "go$1.0" ;;
	esac
}

fail=0
for m in "${modules[@]}"; do
	if [ ! -f "$m/go.mod" ]; then
		echo "gotoolchain-check: $m/go.mod not found" >&2
		exit 1
	fi
	# The go commands below run with the local toolchain (GOTOOLCHAIN=local),
	# so that reading the module never switches toolchains by itself.
	want=$(cd "$m" && GOTOOLCHAIN=local $GO list -m -f '{{.GoVersion}}')
	deps=$(cd "$m" && GOTOOLCHAIN=local $GO list -m -f '{{if not .Main}}{{.GoVersion}}{{end}}' all | vmax)
	clientgo=$(cd "$m" && GOTOOLCHAIN=local $GO list -m -f '{{.GoVersion}}' k8s.io/client-go)
	echo "== $m: go $want (dependencies need go $deps; client-go says go $clientgo)"
	if [ "$want" != "$deps" ]; then
		if [ "$(printf '%s\n%s\n' "$want" "$deps" | vmax)" = "$want" ]; then
			echo "gotoolchain-check: $m/go.mod says go $want, stricter than its dependencies need: set it to go $deps" >&2
		else
			echo "gotoolchain-check: $m/go.mod says go $want, lower than its dependencies need (go $deps): run go mod tidy" >&2
		fi
		fail=1
		continue
	fi
	if [ "$(printf '%s\n%s\n' "$want" "$clientgo" | vmax)" != "$clientgo" ]; then
		echo "gotoolchain-check: $m/go.mod says go $want, stricter than client-go's go $clientgo" >&2
		fail=1
		continue
	fi

	tc=$(toolchain "$want")
	# Fetches golang.org/toolchain@v0.0.1-$tc.$GOOS-$GOARCH through GOPROXY
	# the first time; fails if the proxy does not serve it.
	got=$(cd "$m" && GOTOOLCHAIN=$tc $GO env GOVERSION) || {
		echo "gotoolchain-check: the module proxy ($($GO env GOPROXY)) did not serve golang.org/toolchain for $tc" >&2
		exit 1
	}
	if [ "$got" != "$tc" ]; then
		echo "gotoolchain-check: GOTOOLCHAIN=$tc ran $got" >&2
		exit 1
	fi
	echo "   $tc from the module proxy: go vet and go test"
	(cd "$m" && GOTOOLCHAIN=$tc $GO vet ./... && GOTOOLCHAIN=$tc $GO test -count=1 ./...) || fail=1
done
exit $fail
