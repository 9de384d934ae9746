// Command sharded-controller reconciles the ConfigMaps of a namespace with
// the work spread over every running copy: the ConfigMaps are cut into
// shards by the hash of their UID (shard.Of), and each copy runs, for each
// shard it owns, an informer that receives that shard's ConfigMaps only.
// Run three copies:
//
//	go run . -kubeconfig=$KUBECONFIG -id=a
//	go run . -kubeconfig=$KUBECONFIG -id=b
//	go run . -kubeconfig=$KUBECONFIG -id=c
//
// Each shard runs in exactly one copy. Ctrl-C one: its shards restart in
// the others within milliseconds. Kill one (SIGKILL): its shards restart in
// the others once its member Lease expires (-lease-duration). Start it
// again: it takes its fair share back.
//
// "Reconciling" a ConfigMap here means recording, in its annotations,
// which copy and shard last reconciled it, so the spread shows with
//
//	kubectl get cm -o custom-columns=NAME:.metadata.name,BY:.metadata.annotations.sharded-controller\.example/by
//
// When the API server has the ShardedListAndWatch feature gate (KEP-5866)
// each shard's informer asks it for that shard only; without it the
// informer receives every ConfigMap and keeps its shard's (detected at
// start, see shard.ServerFiltersShards).
//
// With -controller-runtime the same controller runs as a controller-runtime
// controller, confined to the copy's shards by controllerruntime.Sharder
// (github.com/leasehold/leasehold/controllerruntime): one manager per
// copy, its cache holding every ConfigMap, shards filtered on the client.
//
// Human-readable logs go to stderr (klog). For scripts and tests, stdout
// carries one line per event, fields separated by one space, times in Unix
// nanoseconds:
//
//	FILTER <id> server|client <unix-nanos>      how shards are filtered
//	STARTED <id> <shard> <unix-nanos>           a shard's work started here (not with -controller-runtime)
//	STOPPED <id> <shard> <unix-nanos>           a shard's work returned
//	RECONCILED <id> <shard> <name> <unix-nanos> a ConfigMap was reconciled
//	EXIT <id> <unix-nanos>                      the process is about to exit
package main

import (
	"context"
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
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/sharding"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"

	"github.com/leasehold/leasehold"
	leaseholdprom "github.com/leasehold/leasehold/metrics/prometheus"
	"github.com/leasehold/leasehold/shard"
)

// Annotations this controller writes on the ConfigMaps it reconciles.
const (
	annotationBy    = "sharded-controller.example/by"
	annotationShard = "sharded-controller.example/shard"
)

type options struct {
	kubeconfig     string
	id             string
	leaseNamespace string
	namespace      string
	group          string
	shards         int
	leaseDuration  time.Duration
	renewDeadline  time.Duration
	retryPeriod    time.Duration
	crt            bool
	metricsAddr    string
	metrics        shard.Metrics // set from metricsAddr; nil: none
}

func main() { os.Exit(run()) }

func run() int {
	var o options
	klog.InitFlags(nil)
	flag.StringVar(&o.kubeconfig, "kubeconfig", "", "path to a kubeconfig; empty: the in-cluster config")
	flag.StringVar(&o.id, "id", "", "identity of this copy, unique in the group; empty: hostname_random")
	flag.StringVar(&o.leaseNamespace, "lease-namespace", "default", "namespace of the group's Leases")
	flag.StringVar(&o.namespace, "namespace", "default", "namespace of the ConfigMaps to reconcile")
	flag.StringVar(&o.group, "group", "sharded-controller", "name of the shard group (its Leases)")
	flag.IntVar(&o.shards, "shards", 8, "number of shards, the same in every copy")
	flag.DurationVar(&o.leaseDuration, "lease-duration", leasehold.DefaultLeaseDuration, "LeaseDuration of the membership")
	flag.DurationVar(&o.renewDeadline, "renew-deadline", leasehold.DefaultRenewDeadline, "RenewDeadline of the membership")
	flag.DurationVar(&o.retryPeriod, "retry-period", leasehold.DefaultRetryPeriod, "RetryPeriod of the membership")
	flag.BoolVar(&o.crt, "controller-runtime", false, "run the controller as a controller-runtime controller (controllerruntime.Sharder)")
	flag.StringVar(&o.metricsAddr, "metrics-addr", "", "address to serve the shard group's Prometheus metrics on, at /metrics, e.g. :9090; empty: off")
	flag.Parse()
	if o.metricsAddr != "" {
		m, err := serveMetrics(o.metricsAddr)
		if err != nil {
			klog.ErrorS(err, "No metrics server")
			return 1
		}
		o.metrics = m
	}

	if o.id == "" {
		id, err := leasehold.DefaultIdentity()
		if err != nil {
			klog.ErrorS(err, "No identity")
			return 1
		}
		o.id = id
	}
	defer emit("EXIT", o.id)

	cfg, err := clientcmd.BuildConfigFromFlags("", o.kubeconfig)
	if err != nil {
		klog.ErrorS(err, "No API server config")
		return 1
	}
	cfg.QPS, cfg.Burst = 50, 100 // client-go's default, 5 QPS, paces a burst of reconciles
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	runFn := runController
	if o.crt {
		runFn = runControllerRuntime
	}
	if err := runFn(ctx, o, cfg); err != nil {
		klog.ErrorS(err, "Sharded controller ended")
		return 1
	}
	return 0
}

func runController(ctx context.Context, o options, cfg *rest.Config) error {
	// The request timeout keeps a hung request from using up the renew
	// deadline (informers' watches are exempt).
	cs, err := kubernetes.NewForConfig(leasehold.WithRequestTimeout(cfg, o.renewDeadline))
	if err != nil {
		return err
	}
	serverSide, err := shard.ServerFiltersShards(ctx, func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
		return cs.CoreV1().ConfigMaps(o.namespace).List(ctx, opts)
	})
	if err != nil {
		return err
	}
	how := "client"
	if serverSide {
		how = "server"
	}
	emit("FILTER", o.id, how)
	klog.InfoS("Shard filtering", "where", how)

	c := &controller{o: o, cs: cs, serverSide: serverSide}
	m, err := shard.New(shard.Config{
		Namespace:       o.leaseNamespace,
		Group:           o.group,
		Identity:        o.id,
		Client:          cs.CoordinationV1(),
		Shards:          o.shards,
		LeaseDuration:   o.leaseDuration,
		RenewDeadline:   o.renewDeadline,
		RetryPeriod:     o.retryPeriod,
		ReleaseOnCancel: true,
		Metrics:         o.metrics,
		OnShardStarted:  c.runShard,
		OnShardStopped:  func(i int) { emit("STOPPED", o.id, fmt.Sprint(i)) },
	})
	if err != nil {
		return err
	}
	return m.Run(ctx)
}

// serveMetrics serves leasehold's metrics (metrics/prometheus), on a
// registry of their own, at /metrics on addr, until the process exits.
func serveMetrics(addr string) (*leaseholdprom.Metrics, error) {
	reg := prometheus.NewRegistry()
	m, err := leaseholdprom.New(reg)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics server: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	go func() { _ = (&http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}).Serve(ln) }()
	klog.InfoS("Serving /metrics", "addr", ln.Addr().String())
	return m, nil
}

type controller struct {
	o          options
	cs         kubernetes.Interface
	serverSide bool
}

// runShard runs shard i until its ctx ends: an informer that receives
// the shard's ConfigMaps and a worker that reconciles them. Both are gone
// when it returns, so the next owner never overlaps with this one.
func (c *controller) runShard(ctx context.Context, i int) {
	emit("STARTED", c.o.id, fmt.Sprint(i))
	log := klog.FromContext(ctx)
	sel := shard.Selector(shard.FieldUID, c.o.shards, i)
	factory := informers.NewSharedInformerFactoryWithOptions(c.cs, 0,
		informers.WithNamespace(c.o.namespace),
		informers.WithTweakListOptions(func(lo *metav1.ListOptions) {
			if c.serverSide {
				lo.ShardSelector = sel.String()
			}
		}))
	informer := factory.Core().V1().ConfigMaps()
	queue := workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[string]())
	enqueue := func(obj any) {
		if key, err := cache.MetaNamespaceKeyFunc(obj); err == nil {
			queue.Add(key)
		}
	}
	_, _ = informer.Informer().AddEventHandler(cache.FilteringResourceEventHandler{
		FilterFunc: func(obj any) bool { return inShard(sel, obj) },
		Handler: cache.ResourceEventHandlerFuncs{
			AddFunc:    enqueue,
			UpdateFunc: func(_, obj any) { enqueue(obj) },
		},
	})
	factory.Start(ctx.Done())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if !cache.WaitForCacheSync(ctx.Done(), informer.Informer().HasSynced) {
			return
		}
		for c.processNext(ctx, queue, informer.Lister().ConfigMaps(c.o.namespace), i) {
		}
	}()
	<-ctx.Done()
	queue.ShutDown()
	wg.Wait()
	factory.Shutdown()
	log.V(2).Info("Shard stopped", "shard", i)
}

// inShard keeps the shard's objects (every object the server sends, when
// it filters; the shard's share of all of them, when it does not).
func inShard(sel sharding.Selector, obj any) bool {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	o, ok := obj.(runtime.Object)
	if !ok {
		return false
	}
	match, err := sel.Matches(o)
	return err == nil && match
}

type lister interface {
	Get(name string) (*corev1.ConfigMap, error)
}

func (c *controller) processNext(ctx context.Context, queue workqueue.TypedRateLimitingInterface[string], cms lister, i int) bool {
	key, quit := queue.Get()
	if quit {
		return false
	}
	defer queue.Done(key)
	err := c.reconcile(ctx, cms, key, i)
	switch {
	case err == nil:
		queue.Forget(key)
	case ctx.Err() != nil:
	default:
		klog.FromContext(ctx).Error(err, "Reconcile failed; retrying", "configMap", key)
		queue.AddRateLimited(key)
	}
	return true
}

// reconcile records this copy and shard on the ConfigMap, if not yet.
func (c *controller) reconcile(ctx context.Context, cms lister, key string, i int) error {
	_, name, _ := strings.Cut(key, "/")
	cm, err := cms.Get(name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if cm.Annotations[annotationBy] == c.o.id && cm.Annotations[annotationShard] == fmt.Sprint(i) {
		return nil
	}
	cm = cm.DeepCopy()
	if cm.Annotations == nil {
		cm.Annotations = map[string]string{}
	}
	cm.Annotations[annotationBy] = c.o.id
	cm.Annotations[annotationShard] = fmt.Sprint(i)
	_, err = c.cs.CoreV1().ConfigMaps(c.o.namespace).Update(ctx, cm, metav1.UpdateOptions{})
	if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
		return nil // a newer version comes through the informer
	}
	if err != nil {
		return err
	}
	emit("RECONCILED", c.o.id, fmt.Sprint(i), name)
	return nil
}

var out sync.Mutex

// emit prints one machine-readable event line on stdout.
func emit(event, id string, fields ...string) {
	out.Lock()
	defer out.Unlock()
	parts := append([]string{event, id}, fields...)
	fmt.Printf("%s %d\n", strings.Join(parts, " "), time.Now().UnixNano())
}
