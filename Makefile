# leasehold (integration packages run one at a time: each starts its own control plane, and their timing checks need the 2 cores)
#   make test     everything CI runs: lint, unit tests (-race) of every module,
#                 the imported modules on the exact Go toolchain of their go
#                 directive, integration tests on a real kube-apiserver + etcd
#   make demo     three example processes elect a leader on a real control plane,
#                 then a real kubectl and the kubectl-leasehold plugin move it
#   make demo-shards  three sharded-controller processes share shards
#   make bench    leasehold vs client-go on the real control plane -> BENCHMARKS.md
#   make chaos    fault-injection run that checks "never two leaders"
#   make soak     1,000+ faults over every chaos mode and fault kind (~1 hour)
#   make sim      seeded worlds of the election on virtual time (test/sim);
#                 SEEDS=4000 by default (over 100,000 candidate-minutes, ~2 min),
#                 then SHARD_SEEDS=1000 shard groups (~2 min),
#                 figures into docs/reliability.md; a sample runs in make test
#   make slowapi  leasehold vs client-go vs controller-runtime behind a slow API server, virtual time -> BENCHMARKS.md
#   make mutate   breaks each contract point on purpose; the tests must notice
#   make rules    promtool (built from source, cached) checks the alert rules
#                 and runs their unit tests (deploy/monitoring); part of make test
#   make monitoring  regenerates deploy/monitoring's rules and dashboard from Go
#   make demo-metrics  a real Prometheus scrapes the examples on the real control
#                 plane and evaluates the alert rules -> docs/metrics-scenario.png
# The control plane is built from source through the Go module proxy the
# first time (about 12 minutes on 2 cores) into bin/controlplane/.
SHELL := /bin/bash
GO ?= go
MODULES := . leaseholdtest metrics/prometheus examples test kubectl-leasehold controllerruntime monitoring
SUBMODULES := metrics/prometheus examples test kubectl-leasehold controllerruntime monitoring
# Modules with unit tests of their own (test/ holds the real-control-plane suites).
UNITMODULES := metrics/prometheus examples kubectl-leasehold controllerruntime monitoring

.PHONY: test lint unit rules gotoolchain integration controlplane kubectl plugin demo demo-shards bench chaos soak sim slowapi mutate fuzz promtool prometheus monitoring demo-metrics

test: lint unit rules gotoolchain integration

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	@for m in $(SUBMODULES); do if [ -f $$m/go.mod ]; then echo "go vet ($$m)"; (cd $$m && $(GO) vet ./...) || exit 1; fi; done
	@if grep -qE 'sigs.k8s.io/controller-runtime|k8s.io/kubernetes ' go.mod; then echo "root go.mod must not require controller-runtime or k8s.io/kubernetes"; exit 1; fi
	$(GO) run ./hack/mutate -check

unit:
	$(GO) test -race -count=1 ./...
	@for m in $(UNITMODULES); do if [ -f $$m/go.mod ]; then echo "go test ($$m)"; (cd $$m && $(GO) test -race -count=1 ./...) || exit 1; fi; done
	@echo "simulation sample (test/sim, 216 seeded worlds on virtual time)"
	cd test && $(GO) test -race -count=1 -tags simsample -run TestSample ./sim/

# Each module users import builds and passes its unit tests with the exact
# Go toolchain its go directive names (fetched through the module proxy),
# and that directive is no stricter than its dependencies need.
gotoolchain:
	hack/gotoolchain-check.sh

controlplane:
	hack/controlplane/build.sh

# promtool from the Prometheus that monitoring/go.mod pins, built from
# source through the module proxy into bin/prometheus/ (a few minutes the
# first time; cached with a stamp after that).
promtool:
	hack/prometheus/build.sh

# The alert rules load in promtool, and promtool's unit tests of every alert
# (firing and not) pass. The monitoring module's Go tests (in make unit)
# check that the rules and the dashboard are what monitoring generates and
# that every PromQL expression parses.
rules: promtool
	bin/prometheus/promtool check rules deploy/monitoring/leasehold-rules.yaml
	cd deploy/monitoring && ../../bin/prometheus/promtool test rules leasehold-rules.test.yaml

# Regenerate deploy/monitoring (rules, PrometheusRule, dashboard) from Go.
monitoring:
	cd monitoring && $(GO) run ./cmd/generate

# The Prometheus server, built from source like promtool (without its web
# UI's assets: the HTTP API is all the scenario needs).
prometheus:
	hack/prometheus/build.sh --prometheus

# A real Prometheus scrapes three examples/leader-election and three
# examples/sharded-controller processes (-metrics-addr) on the real control
# plane, with the alert rules generated for 1s scrapes: SIGKILL of the
# leader makes LeaseholdNoLeader pending, then resolved; LeaseholdSplitBrain
# never fires; prints the alert timeline and renders docs/metrics-scenario.png.
demo-metrics: controlplane prometheus
	cd test && $(GO) run ./cmd/demometrics

# kubectl from the same pinned Kubernetes, with its own stamp.
kubectl: controlplane
	hack/controlplane/build-kubectl.sh

# The kubectl plugin, as bin/kubectl-leasehold (put bin/ on PATH).
plugin:
	cd kubectl-leasehold && $(GO) build -o ../bin/kubectl-leasehold .

integration: controlplane kubectl
	@if [ -f test/go.mod ]; then cd test && $(GO) test -race -count=1 -p 1 -timeout 30m ./...; fi

demo: controlplane kubectl
	cd test && $(GO) run ./cmd/demo

# Three examples/sharded-controller processes share ConfigMaps over 8 shards;
# SIGINT and SIGKILL move shards; prints a per-member timeline.
demo-shards: controlplane
	cd test && $(GO) test -count=1 -run TestShardedControllerThreeProcesses -v ./sharding/

bench: controlplane
	cd test && $(GO) run ./cmd/bench

chaos: controlplane
	cd test && $(GO) run ./cmd/chaos

# At least 1,000 faults across every chaos mode and fault kind (about an
# hour), then takeover times behind a lagging API server. Not in make test.
# Seeds of the deterministic simulation (test/sim): electors on an in-memory
# API server in synctest bubbles under seeded faults, invariants checked on
# virtual time; a failing seed is shrunk and printed with its replay command.
SEEDS ?= 4000
SHARD_SEEDS ?= 1000
sim:
	cd test && $(GO) run ./cmd/sim -seeds $(SEEDS) -report ../docs/reliability.md
	cd test && $(GO) run ./cmd/sim -world shard -seeds $(SHARD_SEEDS) -report ../docs/reliability.md

slowapi:
	cd test && $(GO) run ./cmd/slowapi

soak: controlplane
	cd test && $(GO) run ./cmd/chaos -mode election -kinds all -faults 400 -seed 101
	cd test && $(GO) run ./cmd/chaos -mode yield -kinds all -faults 250 -seed 102
	cd test && $(GO) run ./cmd/chaos -mode shard -kinds all -faults 200 -seed 103
	cd test && $(GO) run ./cmd/chaos -mode fenced -kinds all -faults 200 -seed 104
	cd test && $(GO) run ./cmd/chaos -measure-lag 0,250ms,500ms,1s,2s -rounds 3

# Hand-written mutations, at least one per contract point of every package
# (hack/mutate/mutations_<pkg>.go, listed in docs/mutations.md), each applied
# alone to a scratch copy, two at a time; fails if a test does not catch one
# (about 15 minutes on 2 cores).
mutate:
	$(GO) run ./hack/mutate

fuzz:
	$(GO) test -run '^$$' -fuzz FuzzDecideCampaign -fuzztime 60s .
