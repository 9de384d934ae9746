package bench

// The scale phase (issue 10, item 4): ScaleN elections, one candidate each
// on its own Lease, in this process with one shared clientset. A run is
// leasehold, then client-go, with the same timings and content type; the
// phase makes several runs at the defaults (JSON and protobuf bodies) and
// one at longer timings for comparison.

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"runtime"
	"slices"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/leasehold/leasehold"
	"github.com/leasehold/leasehold/test/internal/sleep"
)

// Content types the scale phase's clientset sends and accepts.
const (
	ContentJSON     = "application/json"
	ContentProtobuf = "application/vnd.kubernetes.protobuf"
)

// ScaleRunSpec is one run of the scale phase: ScaleN elections of
// leasehold, then ScaleN of client-go, with these timings and this content
// type.
type ScaleRunSpec struct {
	Timings     Timings
	ContentType string // ContentJSON or ContentProtobuf
}

// ContentName is "JSON" or "protobuf".
func (s ScaleRunSpec) ContentName() string {
	if s.ContentType == ContentProtobuf {
		return "protobuf"
	}
	return "JSON"
}

// ScaleRun is one run of the scale phase and what it measured.
type ScaleRun struct {
	ScaleRunSpec
	Index   int // 1-based, in the order the runs were made
	Results map[Lib]*ScaleResult
}

// Label names the run in the report, e.g. "2: 15s/10s/2s, JSON".
func (r *ScaleRun) Label() string {
	return fmt.Sprintf("%d: %s, %s", r.Index, r.Timings, r.ContentName())
}

// ScaleResult is the cost of N elections in one process.
type ScaleResult struct {
	N                  int
	Timings            Timings
	Startup            time.Duration // first elector started -> all N leading (or the 2 min timeout)
	Leading            int           // leading at the start of the window
	LeadingEnd         int           // leading at the end of the window
	TermsLost          int           // terms ended during the window
	HeapPerElection    float64       // bytes, HeapInuse delta after GC / N
	GoroutinesPerEl    float64
	CPU                float64 // this process, cores (CPU seconds per second)
	ServerCPU          float64 // kube-apiserver + etcd, cores
	Window             time.Duration
	Counts             Counts
	RenewP50, RenewP99 time.Duration
	// Failed counts failed requests by verb over the whole phase, and
	// RunErrors the errors Run returned (leasehold), by message.
	Failed    map[string]int
	RunErrors map[string]int
	// ServerTerminatedWatches is the growth of kube-apiserver's
	// apiserver_terminated_watchers_total during the window: watchers it
	// closed because they did not keep up.
	ServerTerminatedWatches int
}

// PerMin is requests per minute during the window.
func (s ScaleResult) PerMin() float64 { return float64(s.Counts.Total()) / s.Window.Minutes() }

// Held reports whether all N elections led from the start to the end of
// the window without losing a term.
func (s ScaleResult) Held() bool {
	return s.Leading == s.N && s.LeadingEnd == s.N && s.TermsLost == 0
}

// scalePlan lists the runs Options ask for. The protobuf runs are spread
// among the JSON ones, so that a drift of the machine over the phase
// (etcd's database grows) does not all land on one content type; the
// comparison run comes last.
func (o Options) scalePlan() []ScaleRunSpec {
	var plan []ScaleRunSpec
	j, p := o.ScaleRuns, o.ScaleProtobufRuns
	for j > 0 || p > 0 {
		if j > 0 {
			plan = append(plan, ScaleRunSpec{o.ScaleTimings, ContentJSON})
			j--
		}
		if p > 0 {
			plan = append(plan, ScaleRunSpec{o.ScaleTimings, ContentProtobuf})
			p--
		}
	}
	if o.ScaleCompare != (Timings{}) {
		plan = append(plan, ScaleRunSpec{o.ScaleCompare, ContentJSON})
	}
	return plan
}

// scaleRuns makes every run of the scale phase, each library as a phase of
// its own.
func (b *runner) scaleRuns(ctx context.Context) {
	for i, spec := range b.opts.scalePlan() {
		if ctx.Err() != nil {
			return
		}
		run := &ScaleRun{ScaleRunSpec: spec, Index: i + 1, Results: map[Lib]*ScaleResult{}}
		b.rep.ScaleRuns = append(b.rep.ScaleRuns, run)
		for _, lib := range Libs {
			b.phase(fmt.Sprintf("scale run %s %s", run.Label(), lib), func() {
				if err := b.scale(ctx, run, lib); err != nil {
					b.rep.errorf("scale run %s %s: %v", run.Label(), lib, err)
				}
			})
		}
	}
}

// scaleClient is clientFor(admin, rec, true) with the run's content type:
// one clientset with its own HTTP transport, shared by all the run's
// electors, as one process would.
func scaleClient(admin *rest.Config, rec *Recorder, contentType string) (kubernetes.Interface, error) {
	cfg := rest.CopyConfig(admin)
	cfg.QPS, cfg.Burst = 5000, 10000
	cfg.ContentType = contentType
	cfg.AcceptContentTypes = contentType
	if contentType == ContentProtobuf {
		cfg.AcceptContentTypes = ContentProtobuf + "," + ContentJSON
	}
	cfg.Timeout = 0
	cfg.Proxy = func(*http.Request) (*url.URL, error) { return nil, nil } // uncacheable: a transport of its own
	cfg.WrapTransport = rec.Wrap
	return kubernetes.NewForConfig(cfg)
}

// scale runs ScaleN elections of lib, one candidate each on its own Lease
// in a namespace of its own, in this process with one shared clientset,
// and measures memory, CPU, requests and whether the elections held. An
// election that is not held is a measurement (the report's targets), not
// an error; the error is for a run that could not be made.
func (b *runner) scale(ctx context.Context, run *ScaleRun, lib Lib) error {
	n, t := b.opts.ScaleN, run.Timings
	ns := fmt.Sprintf("bench-scale-%d-%s", run.Index, lib)
	if _, err := b.cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create namespace %s: %w", ns, err)
	}
	res := &ScaleResult{N: n, Timings: t}
	run.Results[lib] = res

	runtime.GC()
	runtime.GC()
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	g0 := runtime.NumGoroutine()

	rec := NewRecorder()
	cs, err := scaleClient(b.admin, rec, run.ContentType)
	if err != nil {
		return fmt.Errorf("clientset: %w", err)
	}
	defer rec.CloseIdle()
	var shared *leasehold.SharedWatch
	if lib == Leasehold {
		shared = leasehold.NewSharedWatch(cs.CoordinationV1(), ns)
	}
	es := make([]*elector, 0, n)
	defer func() {
		if err := stopAll(es, 60*time.Second); err != nil {
			b.rep.errorf("scale run %s %s: %v", run.Label(), lib, err)
		}
		res.RunErrors = map[string]int{}
		for _, e := range es {
			if e.err != nil {
				res.RunErrors[e.err.Error()]++
			}
		}
		res.Failed = rec.Snapshot().Failed
		if len(res.RunErrors) > 0 || len(res.Failed) > 0 {
			b.logf("scale %s: failed requests by verb (whole phase) %v; Run errors %v", lib, res.Failed, res.RunErrors)
		}
		if res.Window > 0 && !res.Held() {
			b.rep.notef("scale run %s, %s: %d of %d leading at the window's start, %d at its end, %d terms lost in it; failed requests by verb over the whole run %v; errors Run returned %v",
				run.Label(), lib, res.Leading, n, res.LeadingEnd, res.TermsLost, res.Failed, res.RunErrors)
		}
	}()
	started := time.Now()
	for i := 0; i < n; i++ {
		e := startElector(ctx, electorSpec{lib: lib, namespace: ns, lease: fmt.Sprintf("scale-%d", i),
			id: fmt.Sprintf("scale-%s-%d", lib, i), timings: t, client: cs, rec: rec, shared: shared})
		es = append(es, e)
		if lib == ClientGo && e.err != nil { // NewLeaderElector refused the config
			return fmt.Errorf("start elector %d: %w", i, e.err)
		}
		if i%50 == 49 {
			time.Sleep(100 * time.Millisecond) // ramp up: 500 per second
		}
	}
	leading := func() int {
		k := 0
		for _, e := range es {
			if e.leading.Load() {
				k++
			}
		}
		return k
	}
	lost := func() int {
		k := 0
		for _, e := range es {
			k += int(e.stopped.Load())
		}
		return k
	}
	if !waitFor(ctx, 2*time.Minute, func() bool { return leading() == n }) {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		b.logf("scale %s: only %d of %d leading 2 min after start; measuring anyway", lib, leading(), n)
	}
	res.Startup = time.Since(started)
	if err := sleep.For(ctx, b.opts.ScaleWarmup); err != nil {
		return err
	}

	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&m1)
	res.HeapPerElection = (float64(m1.HeapInuse) - float64(m0.HeapInuse)) / float64(n)
	res.GoroutinesPerEl = float64(runtime.NumGoroutine()-g0) / float64(n)

	term0 := serverMetric(ctx, b.cs, "apiserver_terminated_watchers_total")
	c0, cpu0, srv0, lost0 := rec.Snapshot(), processCPU(), serverCPU(), lost()
	res.Leading = leading()
	renewals := startRenewSampler(rec)
	w0 := time.Now()
	windowErr := sleep.For(ctx, b.opts.ScaleWindow)
	res.Window = time.Since(w0)
	res.RenewP50, res.RenewP99 = renewals.stop()
	c1, cpu1, srv1 := rec.Snapshot(), processCPU(), serverCPU()
	if term1 := serverMetric(ctx, b.cs, "apiserver_terminated_watchers_total"); term0 >= 0 && term1 >= 0 {
		res.ServerTerminatedWatches = int(term1 - term0)
	}
	res.Counts = c1.Sub(c0)
	res.CPU = (cpu1 - cpu0).Seconds() / res.Window.Seconds()
	res.ServerCPU = (srv1 - srv0).Seconds() / res.Window.Seconds()
	res.LeadingEnd = leading()
	res.TermsLost = lost() - lost0
	if lib == Leasehold && res.ServerTerminatedWatches > 0 {
		b.rep.notef("scale run %s: kube-apiserver closed %d watcher(s) as too slow during the leasehold window (apiserver_terminated_watchers_total); leasehold's SharedWatch (one namespace-wide watch receiving every renewal of all %d Leases) opened its watch %d time(s) in the window, resuming from its last resourceVersion",
			run.Label(), res.ServerTerminatedWatches, n, res.Counts.WatchesOpened)
	}
	b.logf("scale %s: %d/%d leading at window start/end, %d terms lost; server terminated %d watchers in the window; write p50 %s p99 %s",
		lib, res.Leading, res.LeadingEnd, res.TermsLost, res.ServerTerminatedWatches, fmtDur(res.RenewP50), fmtDur(res.RenewP99))
	b.logf("scale %s: all leading after %v; %.1f KiB and %.1f goroutines per election; CPU %.0f%% (server %.0f%%); %.0f requests/min %v; watches open %d",
		lib, res.Startup.Round(time.Millisecond), res.HeapPerElection/1024, res.GoroutinesPerEl,
		100*res.CPU, 100*res.ServerCPU, res.PerMin(), res.Counts.Verbs, res.Counts.WatchesOpen)
	return windowErr
}

// renewSampler samples the latency of writes during the scale window
// through the recorder (every successful write's round trip).
type renewSampler struct {
	stopFn func() (time.Duration, time.Duration)
}

func startRenewSampler(rec *Recorder) *renewSampler {
	d := &Dist{}
	var mu sync.Mutex
	rec.setWriteHook(func(took time.Duration) {
		mu.Lock()
		d.Add(took)
		mu.Unlock()
	})
	return &renewSampler{stopFn: func() (time.Duration, time.Duration) {
		rec.setWriteHook(nil)
		mu.Lock()
		defer mu.Unlock()
		return d.P50(), d.P99()
	}}
}

func (s *renewSampler) stop() (time.Duration, time.Duration) { return s.stopFn() }

// processCPU is this process's user+system CPU time so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// defaultRuns returns the runs made at the default timings, in order.
func (r *Report) defaultRuns() []*ScaleRun {
	var out []*ScaleRun
	for _, run := range r.ScaleRuns {
		if run.Timings == DefaultTimings && run.Results[Leasehold] != nil && run.Results[ClientGo] != nil &&
			run.Results[Leasehold].Window > 0 && run.Results[ClientGo].Window > 0 {
			out = append(out, run)
		}
	}
	return out
}

// runsOf returns the runs of one content type among runs.
func runsOf(runs []*ScaleRun, contentType string) []*ScaleRun {
	return slices.DeleteFunc(slices.Clone(runs), func(r *ScaleRun) bool { return r.ContentType != contentType })
}
