// Command leader-election is the classic leader-election walk-through on
// leasehold: run several copies against one Lease and watch exactly one of
// them lead at a time.
//
//	go run . -kubeconfig=$HOME/.kube/config -lease-lock-name=example -lease-lock-namespace=default -id=1
//	go run . -kubeconfig=$HOME/.kube/config -lease-lock-name=example -lease-lock-namespace=default -id=2
//
// Stop the leader with Ctrl-C: with -release-on-cancel (the default) it
// stops its work, clears the Lease, and the other copy takes over at once.
//
// Human-readable logs go to stderr (klog). For scripts and tests, stdout
// carries one machine-parseable line per event, fields separated by one
// space, times in Unix nanoseconds:
//
//	LEADING <id> <unix-nanos>            OnStartedLeading was entered
//	STOPPED <id> <unix-nanos>            OnStartedLeading returned
//	NEWLEADER <id> <leader> <unix-nanos> OnNewLeader reported <leader>
//	EXIT <id> <unix-nanos>               the process is about to exit
//
// The exit status is 0 after a clean cancel (SIGINT or SIGTERM) and 1 on
// any error, the loss of the lease included, and when the work did not
// return within -step-down-timeout of the signal (try -stuck-work).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"

	"github.com/leasehold/leasehold"
	leaseholdprom "github.com/leasehold/leasehold/metrics/prometheus"
)

// healthTolerance is how long past the renew deadline a stuck leader stays
// healthy, so a single slow renewal does not get the pod restarted.
const healthTolerance = 20 * time.Second

// options are the command-line flags.
type options struct {
	kubeconfig      string
	leaseName       string
	leaseNamespace  string
	id              string
	leaseDuration   time.Duration
	renewDeadline   time.Duration
	retryPeriod     time.Duration
	debugLease      bool
	releaseOnCancel bool
	healthAddr      string
	metricsAddr     string
	stepDownTimeout time.Duration
	stuckWork       bool
}

func main() {
	os.Exit(run())
}

// run is main without os.Exit, so that deferred calls run. It returns the
// exit status.
func run() int {
	var o options
	klog.InitFlags(nil)
	flag.StringVar(&o.kubeconfig, "kubeconfig", "", "path to a kubeconfig; empty: the in-cluster config")
	flag.StringVar(&o.leaseName, "lease-lock-name", "", "name of the Lease to campaign for (required)")
	flag.StringVar(&o.leaseNamespace, "lease-lock-namespace", "", "namespace of the Lease; empty: this pod's namespace")
	flag.StringVar(&o.id, "id", "", "identity of this process, unique among the candidates, without spaces; empty: hostname_random")
	flag.DurationVar(&o.leaseDuration, "lease-duration", leasehold.DefaultLeaseDuration, "how long a follower waits without seeing a renewal before taking over")
	flag.DurationVar(&o.renewDeadline, "renew-deadline", leasehold.DefaultRenewDeadline, "how long the leader keeps leading without a successful renewal")
	flag.DurationVar(&o.retryPeriod, "retry-period", leasehold.DefaultRetryPeriod, "interval between renewals and between attempts")
	flag.BoolVar(&o.debugLease, "debug-lease", false, "lengthen the lease (120s/90s/10s) so the leader survives a debugger breakpoint; never in production")
	flag.BoolVar(&o.releaseOnCancel, "release-on-cancel", true, "clear the Lease on SIGINT/SIGTERM once the work has stopped, for an immediate handoff")
	flag.StringVar(&o.healthAddr, "health-addr", "", "address to serve /healthz on, e.g. :8080; empty: off")
	flag.StringVar(&o.metricsAddr, "metrics-addr", "", "address to serve Prometheus metrics on, at /metrics, e.g. :9090; empty: off")
	flag.DurationVar(&o.stepDownTimeout, "step-down-timeout", leasehold.DefaultStepDownTimeout, "how long a step-down waits for the work to return before the process exits with status 1")
	flag.BoolVar(&o.stuckWork, "stuck-work", false, "make the work ignore its context, as client-go's example's 'select {}' does, to show the step-down timeout; never in production")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	logger := klog.Background().WithName("leader-election-example")
	ctx = klog.NewContext(ctx, logger)
	defer klog.Flush()

	id, err := identity(o.id)
	if err != nil {
		logger.Error(err, "Cannot choose an identity")
		emit("EXIT", "unknown")
		return 1
	}
	defer emit("EXIT", id)
	logger = logger.WithValues("id", id)
	ctx = klog.NewContext(ctx, logger)

	if err := runElection(ctx, o, id); err != nil {
		logger.Error(err, "Leader election ended with an error")
		return 1
	}
	logger.Info("Leader election ended cleanly")
	return 0
}

// identity returns the -id flag, or a fresh default identity if it is
// empty. An identity must not contain whitespace: stdout lines are split
// on spaces.
func identity(flagID string) (string, error) {
	if flagID == "" {
		return leasehold.DefaultIdentity()
	}
	if strings.ContainsFunc(flagID, func(r rune) bool { return r == ' ' || r == '\t' || r == '\n' || r == '\r' }) {
		return "", fmt.Errorf("-id %q contains whitespace; the stdout protocol splits on spaces", flagID)
	}
	return flagID, nil
}

// runElection builds the client, the lock and the elector from the flags
// and runs the election until ctx is cancelled or it fails.
func runElection(ctx context.Context, o options, id string) error {
	logger := klog.FromContext(ctx)
	if o.leaseName == "" {
		return errors.New("-lease-lock-name is required")
	}
	if o.debugLease {
		o.leaseDuration, o.renewDeadline, o.retryPeriod = 120*time.Second, 90*time.Second, 10*time.Second
		logger.Info("WARNING: -debug-lease lengthens the lease for debugging; a crashed leader now blocks the others for up to 2 minutes. Never use it in production",
			"leaseDuration", o.leaseDuration, "renewDeadline", o.renewDeadline, "retryPeriod", o.retryPeriod)
	}
	namespace := o.leaseNamespace
	if namespace == "" {
		ns, err := leasehold.InClusterNamespace()
		if err != nil {
			return fmt.Errorf("-lease-lock-namespace is empty and %w", err)
		}
		namespace = ns
	}

	restConfig, err := loadRESTConfig(o.kubeconfig)
	if err != nil {
		return err
	}
	// One hung request must not use up the whole renew deadline.
	clientset, err := kubernetes.NewForConfig(leasehold.WithRequestTimeout(restConfig, o.renewDeadline))
	if err != nil {
		return fmt.Errorf("build clientset: %w", err)
	}

	// Events on the Lease ("became leader", "stopped leading") show up in
	// `kubectl describe lease`. The broadcaster outlives the signal, so
	// that the "stopped leading" event of a clean step-down is still sent.
	broadcaster := record.NewBroadcaster(record.WithContext(context.WithoutCancel(ctx)))
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: clientset.CoreV1().Events(namespace)})
	defer broadcaster.Shutdown()
	recorder := broadcaster.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "leader-election-example", Host: id})

	// leasehold's metrics (metrics/prometheus) on a registry of their own,
	// served at /metrics.
	var metrics leasehold.Metrics
	if o.metricsAddr != "" {
		reg := prometheus.NewRegistry()
		m, err := leaseholdprom.New(reg)
		if err != nil {
			return err
		}
		metrics = m
		shutdown, err := serve(logger, o.metricsAddr, "/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		if err != nil {
			return err
		}
		defer shutdown()
	}

	elector, err := leasehold.New(leasehold.Config{
		Lock: &leasehold.LeaseLock{
			Namespace:     namespace,
			Name:          o.leaseName,
			Identity:      id,
			Client:        clientset.CoordinationV1(),
			EventRecorder: recorder,
		},
		LeaseDuration:   o.leaseDuration,
		RenewDeadline:   o.renewDeadline,
		RetryPeriod:     o.retryPeriod,
		ReleaseOnCancel: o.releaseOnCancel,
		StepDownTimeout: o.stepDownTimeout,
		Metrics:         metrics,
		Callbacks: leasehold.Callbacks{
			OnStartedLeading: func(ctx context.Context) {
				emit("LEADING", id)
				defer emit("STOPPED", id)
				if o.stuckWork {
					// What the checklist warns against: a work that never
					// looks at ctx. The step-down waits StepDownTimeout,
					// then Run fails and the process exits with status 1,
					// taking the work with it before the Lease expires.
					<-context.WithoutCancel(ctx).Done()
				}
				doWork(ctx)
			},
			OnStoppedLeading: func() {
				logger.Info("Stopped leading")
			},
			OnNewLeader: func(leader string) {
				emit("NEWLEADER", id, leader)
				logger.Info("new leader: " + leader)
				if leader == id {
					logger.Info("I am the leader")
				}
			},
		},
	})
	if err != nil {
		return err
	}

	if o.healthAddr != "" {
		shutdown, err := serveHealth(logger, o.healthAddr, elector)
		if err != nil {
			return err
		}
		defer shutdown()
	}

	logger.Info("Campaigning for the lease", "lease", namespace+"/"+o.leaseName)
	// nil after a signal, once the work has returned (and, with
	// -release-on-cancel, the Lease is released).
	return elector.Run(ctx)
}

// doWork is the leader's work: it logs once a second until ctx is
// cancelled, and returns at once when it is.
func doWork(ctx context.Context) {
	logger := klog.FromContext(ctx)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		logger.Info("I am the leader")
		select {
		case <-ctx.Done():
			logger.Info("Work cancelled; returning")
			return
		case <-tick.C:
		}
	}
}

// loadRESTConfig reads the kubeconfig at path, or the in-cluster config if
// path is empty.
func loadRESTConfig(path string) (*rest.Config, error) {
	if path == "" {
		cfg, err := rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("in-cluster config (pass -kubeconfig outside a cluster): %w", err)
		}
		return cfg, nil
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w", path, err)
	}
	return cfg, nil
}

// serveHealth serves /healthz on addr for a liveness probe. It returns once
// the listener is open, with a function that shuts the server down.
func serveHealth(logger klog.Logger, addr string, elector *leasehold.Elector) (func(), error) {
	return serve(logger, addr, "/healthz", elector.HealthHandler(healthTolerance))
}

// serve serves h at path on addr. It returns once the listener is open,
// with a function that shuts the server down.
func serve(logger klog.Logger, addr, path string, h http.Handler) (func(), error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%s server: %w", path, err)
	}
	mux := http.NewServeMux()
	mux.Handle(path, h)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error(err, "Server failed", "path", path)
		}
	}()
	logger.Info("Serving "+path, "addr", ln.Addr().String())
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-done
	}, nil
}

// stdoutMu keeps protocol lines whole when callbacks print concurrently.
var stdoutMu sync.Mutex

// emit prints one protocol line on stdout: the event, its fields, and the
// current time in Unix nanoseconds.
func emit(event string, fields ...string) {
	line := event + " " + strings.Join(fields, " ") + " " + fmt.Sprint(time.Now().UnixNano()) + "\n"
	stdoutMu.Lock()
	defer stdoutMu.Unlock()
	_, _ = os.Stdout.WriteString(line)
}
