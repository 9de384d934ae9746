// Package chaos is a fault-injection harness for leasehold on a real
// kube-apiserver: N candidate processes (test/cmd/chaos/candidate) on one
// Lease, each behind its own fault-injecting proxy, take a seeded series of
// faults — API latency past the renew deadline, 5xx and 429 answers,
// dropped, stalled and reset connections and watches, a partition of one
// candidate, SIGKILL and restart, SIGSTOP/SIGCONT shorter and longer than
// the lease — one at a time. A checker then verifies from the processes'
// own work intervals and the Lease's history that no two processes ever
// worked at once, that leadership came back soon after each fault, that
// every term ended exactly once, and that leaseTransitions only grew.
//
// `make chaos` runs 300 faults (test/cmd/chaos); the package test runs 40.
package chaos

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/leasehold/leasehold/test/walkthrough"
)

// Config configures a chaos run.
type Config struct {
	Admin     *rest.Config // the control plane's admin config
	Candidate string       // path of the candidate binary (BuildCandidate)
	N         int          // candidates; default 5
	Faults    int          // default 300
	Seed      uint64
	Timings   Timings // default 3s/2s/500ms
	// WorkDir receives the kubeconfigs and each candidate incarnation's
	// stderr (<id>.<incarnation>.log). Required.
	WorkDir string
	// Logf reports progress; nil is silent.
	Logf func(format string, args ...any)
}

// DefaultTimings are short, so that hundreds of faults fit in minutes,
// with the same 500ms safety margin as the integration tests.
var DefaultTimings = Timings{LeaseDuration: 3 * time.Second, RenewDeadline: 2 * time.Second, RetryPeriod: 500 * time.Millisecond}

// BuildCandidate builds test/cmd/chaos/candidate into dir.
func BuildCandidate(dir string) (string, error) {
	root, err := walkthrough.RepoRoot()
	if err != nil {
		return "", err
	}
	return walkthrough.Build(filepath.Join(root, "test"), "./cmd/chaos/candidate", filepath.Join(dir, "candidate"))
}

// Kill is one SIGKILL of a candidate incarnation.
type Kill struct {
	Proc string
	Inc  int
	At   time.Time // just after the signal was sent
}

// Pause is one SIGSTOP..SIGCONT of a candidate incarnation.
type Pause struct {
	Proc       string
	Inc        int
	Stop, Cont time.Time // just before SIGSTOP, just after SIGCONT
}

// Injected is one fault as it was injected.
type Injected struct {
	Fault
	Target     string
	TargetInc  int
	WasLeader  bool
	Start      time.Time
	Heal       time.Time // the fault's end; for a kill, the kill itself
	NoLeaderIn string    // set if no stable leader came before the fault
}

// LeaseVersion is one version of the Lease seen by the admin watch.
type LeaseVersion struct {
	RV          string
	Holder      string
	Transitions int32
	Acquire     time.Time
	Seen        time.Time
	Deleted     bool
}

// Exit is the end of one candidate incarnation.
type Exit struct {
	Proc     string
	Inc      int
	At       time.Time
	Status   string // "0" or the exit error
	Expected bool   // killed by the harness, or stopped at shutdown
}

// Record is everything a run observed; Check judges it.
type Record struct {
	Config     Config
	Began      time.Time
	FirstLead  time.Time
	ShutdownAt time.Time
	Ended      time.Time
	Events     []walkthrough.Event
	Kills      []Kill
	Pauses     []Pause
	Faults     []Injected
	Lease      []LeaseVersion
	LeaseNotes []string
	Exits      []Exit
	Problems   []string // liveness and harness problems
	// LostEvents describes candidate stdout lines that could not be read
	// as events (not an event, cut short, a read error): the work
	// intervals may be incomplete, so Check fails the run.
	LostEvents []string
	Proxies    map[string]*ProxyStats
}

type driver struct {
	cfg     Config
	admin   kubernetes.Interface
	ns      string
	tl      *walkthrough.Timeline
	proxies map[string]*Proxy
	ids     []string

	mu       sync.Mutex
	procs    map[string]*walkthrough.Process
	inc      map[string]int
	open     map[string]time.Time // id -> START of the current incarnation's open term
	paused   map[string]bool
	dead     map[string]bool
	ready    map[string]bool // the current incarnation has written an event
	expected map[string]bool // "id#inc" whose exit the harness caused
	shutting bool
	files    []*os.File
	rec      *Record
	wg       sync.WaitGroup
}

func (d *driver) logf(format string, args ...any) {
	if d.cfg.Logf != nil {
		d.cfg.Logf(format, args...)
	}
}

// Run runs the candidates through the planned faults and returns what
// it observed. Every process it started has exited when it returns.
func Run(ctx context.Context, cfg Config) (*Record, error) {
	if cfg.N == 0 {
		cfg.N = 5
	}
	if cfg.Faults == 0 {
		cfg.Faults = 300
	}
	if cfg.Timings == (Timings{}) {
		cfg.Timings = DefaultTimings
	}
	adminCS, err := kubernetes.NewForConfig(cfg.Admin)
	if err != nil {
		return nil, err
	}
	d := &driver{
		cfg: cfg, admin: adminCS, tl: walkthrough.NewTimeline(),
		proxies: map[string]*Proxy{}, procs: map[string]*walkthrough.Process{},
		inc: map[string]int{}, open: map[string]time.Time{}, paused: map[string]bool{},
		dead: map[string]bool{}, expected: map[string]bool{}, ready: map[string]bool{},
		rec: &Record{Config: cfg, Began: time.Now(), Proxies: map[string]*ProxyStats{}},
	}
	d.tl.OnEvent = d.onEvent
	d.ns = fmt.Sprintf("chaos-%d-%d", cfg.Seed, time.Now().UnixNano()%1e6)
	if _, err := adminCS.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: d.ns}}, metav1.CreateOptions{}); err != nil {
		return nil, fmt.Errorf("create namespace: %w", err)
	}
	defer func() {
		_ = adminCS.CoreV1().Namespaces().Delete(context.WithoutCancel(ctx), d.ns, metav1.DeleteOptions{})
	}()

	// Follow the Lease from before the first candidate starts.
	wctx, stopWatch := context.WithCancel(context.WithoutCancel(ctx))
	watchDone := make(chan struct{})
	go func() { defer close(watchDone); d.watchLease(wctx) }()

	defer func() {
		d.shutdown()
		// Let the watch see the final release.
		time.Sleep(500 * time.Millisecond)
		stopWatch()
		<-watchDone
		for id, p := range d.proxies {
			p.Close()
			d.rec.Proxies[id] = &p.Stats
		}
		for _, f := range d.files {
			_ = f.Close()
		}
		d.rec.Events = d.tl.Events()
		d.rec.LostEvents = d.tl.Problems()
		d.rec.Ended = time.Now()
	}()

	for i := 1; i <= cfg.N; i++ {
		id := fmt.Sprintf("c%d", i)
		d.ids = append(d.ids, id)
		p, err := NewProxy(id, cfg.Admin)
		if err != nil {
			return d.rec, err
		}
		d.proxies[id] = p
		if err := writeKubeconfig(filepath.Join(cfg.WorkDir, id+".kubeconfig"), p.URL); err != nil {
			return d.rec, err
		}
	}
	for _, id := range d.ids {
		if err := d.start(id); err != nil {
			return d.rec, err
		}
	}
	t := cfg.Timings
	d.logf("chaos: %d candidates on Lease %s/chaos (LeaseDuration %v, RenewDeadline %v, RetryPeriod %v), %d faults, seed %d, logs in %s",
		cfg.N, d.ns, t.LeaseDuration, t.RenewDeadline, t.RetryPeriod, cfg.Faults, cfg.Seed, cfg.WorkDir)
	if _, err := d.waitStable(ctx, 0, 60*time.Second); err != nil {
		return d.rec, fmt.Errorf("no first leader: %w", err)
	}
	d.rec.FirstLead = time.Now()

	for _, f := range Plan(cfg.Seed, cfg.Faults, t) {
		if ctx.Err() != nil {
			return d.rec, ctx.Err()
		}
		inj := d.inject(ctx, f)
		d.mu.Lock()
		d.rec.Faults = append(d.rec.Faults, inj)
		d.mu.Unlock()
		role := "follower"
		if inj.WasLeader {
			role = "leader"
		}
		d.logf("fault %3d/%d %8.1fs  %-18s on %s (%s) %s", f.Index, cfg.Faults, inj.Start.Sub(d.rec.Began).Seconds(), f.Kind, inj.Target, role, f.Params())
	}
	if _, err := d.waitStable(ctx, 0, d.recoveryTimeout()); err != nil {
		d.problem("no stable leader after the last fault: %v", err)
	}
	return d.rec, nil
}

func (d *driver) recoveryTimeout() time.Duration {
	return d.cfg.Timings.LeaseDuration + d.cfg.Timings.RetryPeriod + 30*time.Second
}

func (d *driver) problem(format string, args ...any) {
	d.mu.Lock()
	defer d.mu.Unlock()
	msg := fmt.Sprintf(format, args...)
	d.rec.Problems = append(d.rec.Problems, msg)
	d.logf("PROBLEM: %s", msg)
}

func (d *driver) onEvent(e walkthrough.Event) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if e.Inc != d.inc[e.Proc] {
		return
	}
	d.ready[e.Proc] = true
	switch e.Kind {
	case "START":
		d.open[e.Proc] = e.Recv
	case "END":
		delete(d.open, e.Proc)
	}
}

// start starts the next incarnation of candidate id.
func (d *driver) start(id string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.shutting {
		return nil
	}
	inc := d.inc[id]
	if _, ok := d.procs[id]; ok {
		inc++
	}
	f, err := os.Create(filepath.Join(d.cfg.WorkDir, fmt.Sprintf("%s.%d.log", id, inc)))
	if err != nil {
		return err
	}
	d.files = append(d.files, f)
	t := d.cfg.Timings
	d.inc[id] = inc
	p, err := walkthrough.StartProcess(walkthrough.ProcessOptions{
		Name: id, Inc: inc, Path: d.cfg.Candidate, Timeline: d.tl, Stderr: f, Strict: true,
		Args: []string{
			"-kubeconfig=" + filepath.Join(d.cfg.WorkDir, id+".kubeconfig"),
			"-namespace=" + d.ns, "-name=chaos", "-id=" + id,
			"-lease-duration=" + t.LeaseDuration.String(),
			"-renew-deadline=" + t.RenewDeadline.String(),
			"-retry-period=" + t.RetryPeriod.String(),
			"-v=2",
		},
	})
	if err != nil {
		return err
	}
	d.procs[id] = p
	delete(d.dead, id)
	delete(d.open, id)
	delete(d.ready, id)
	d.wg.Add(1)
	go d.monitor(p)
	return nil
}

// monitor records the exit of a process, and restarts a candidate that
// exited on its own (Run returned an error).
func (d *driver) monitor(p *walkthrough.Process) {
	defer d.wg.Done()
	<-p.Done()
	err := p.ExitErr()
	d.mu.Lock()
	key := fmt.Sprintf("%s#%d", p.Name, p.Inc)
	exp := d.expected[key] || d.shutting
	status := "0"
	if err != nil {
		status = err.Error()
	}
	d.rec.Exits = append(d.rec.Exits, Exit{Proc: p.Name, Inc: p.Inc, At: p.ExitTime(), Status: status, Expected: exp})
	restart := !exp && !d.shutting && d.procs[p.Name] == p
	if restart {
		d.dead[p.Name] = true
		delete(d.open, p.Name)
	}
	d.mu.Unlock()
	if restart {
		d.problem("%s (incarnation %d) exited on its own with status %s; restarting it (see %s.%d.log)", p.Name, p.Inc, status, p.Name, p.Inc)
		time.Sleep(d.cfg.Timings.RetryPeriod)
		if err := d.start(p.Name); err != nil {
			d.problem("restart %s: %v", p.Name, err)
		}
	}
}

// waitStable waits until every candidate runs unpaused and has reported
// the leader it sees (so it has its signal handlers and a view of the
// Lease), and one has led for at least settle. It returns the leader.
func (d *driver) waitStable(ctx context.Context, settle, timeout time.Duration) (string, error) {
	deadline := time.Now().Add(timeout)
	for {
		d.mu.Lock()
		leader, since := "", time.Time{}
		for id, t := range d.open {
			if t.After(since) {
				leader, since = id, t
			}
		}
		ok := leader != "" && time.Since(since) >= settle && len(d.paused) == 0 && len(d.dead) == 0 && len(d.ready) == len(d.ids)
		d.mu.Unlock()
		if ok {
			return leader, nil
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("no stable leader within %v", timeout)
		}
		if !sleepCtx(ctx, 20*time.Millisecond) {
			return "", ctx.Err()
		}
	}
}

// inject waits for a stable leader, then injects f and heals it.
func (d *driver) inject(ctx context.Context, f Fault) Injected {
	inj := Injected{Fault: f}
	leader, err := d.waitStable(ctx, f.Settle, d.recoveryTimeout())
	if err != nil {
		if ctx.Err() != nil {
			return inj
		}
		inj.NoLeaderIn = err.Error()
		d.problem("before fault %d: %v after the previous fault healed", f.Index, err)
	}
	var followers []string
	for _, id := range d.ids {
		if id != leader {
			followers = append(followers, id)
		}
	}
	target := followers[f.Pick%len(followers)]
	if f.OnLeader && leader != "" {
		target = leader
	}
	d.mu.Lock()
	inj.Target, inj.TargetInc, inj.WasLeader = target, d.inc[target], target == leader
	p := d.procs[target]
	d.mu.Unlock()
	px := d.proxies[target]
	// The window runs out even if ctx ends: a fault is always healed.
	wait := func(w time.Duration) { sleepCtx(ctx, w) }

	inj.Start = time.Now()
	switch f.Kind {
	case KindLatency:
		px.SetLatency(f.ReqDelay, f.RespDelay)
		wait(f.Window)
		px.Heal()
	case Kind5xx, Kind429:
		px.SetStatus(f.Code)
		wait(f.Window)
		px.Heal()
	case KindDropWatch:
		px.DropWatches()
	case KindStallWatch:
		px.StallWatches()
		wait(f.Window)
		px.Heal()
	case KindReset:
		px.SetReset()
		wait(f.Window)
		px.Heal()
	case KindPartition:
		px.SetPartition()
		wait(f.Window)
		px.Heal()
	case KindKill:
		d.mu.Lock()
		d.expected[fmt.Sprintf("%s#%d", target, p.Inc)] = true
		d.dead[target] = true
		at, err := p.Kill()
		delete(d.open, target)
		d.rec.Kills = append(d.rec.Kills, Kill{Proc: target, Inc: p.Inc, At: at})
		d.mu.Unlock()
		if err != nil {
			d.problem("kill %s: %v", target, err)
		}
		inj.Heal = at
		<-p.Done()
		wait(f.RestartAfter)
		if err := d.start(target); err != nil {
			d.problem("restart %s: %v", target, err)
		}
		return inj
	case KindPauseShort, KindPauseLong:
		d.mu.Lock()
		d.paused[target] = true
		d.mu.Unlock()
		stop := time.Now()
		_, err := p.Signal(syscall.SIGSTOP)
		wait(f.Window)
		cont, err2 := p.Signal(syscall.SIGCONT)
		d.mu.Lock()
		delete(d.paused, target)
		d.rec.Pauses = append(d.rec.Pauses, Pause{Proc: target, Inc: p.Inc, Stop: stop, Cont: cont})
		d.mu.Unlock()
		if err := errors.Join(err, err2); err != nil {
			d.problem("pause %s: %v", target, err)
		}
		inj.Heal = cont
		return inj
	}
	inj.Heal = time.Now()
	return inj
}

// shutdown sends SIGINT to every candidate at once and waits for them to
// exit; one that does not within 20s is a hang, and is killed.
func (d *driver) shutdown() {
	d.mu.Lock()
	if d.shutting {
		d.mu.Unlock()
		return
	}
	d.shutting = true
	d.rec.ShutdownAt = time.Now()
	procs := make([]*walkthrough.Process, 0, len(d.procs))
	for _, p := range d.procs {
		procs = append(procs, p)
	}
	d.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range procs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _ = p.Signal(syscall.SIGCONT) // in case it was paused
			_, _ = p.Interrupt()
			if err := p.Wait(20 * time.Second); err != nil && !p.Exited() {
				d.problem("%s (incarnation %d) did not exit within 20s of SIGINT (hang): %v", p.Name, p.Inc, err)
				_, _ = p.Kill()
				_ = p.Wait(10 * time.Second)
			}
		}()
	}
	wg.Wait()
	d.wg.Wait()
}

// watchLease records every version of the Lease, through one watch
// resumed from the last version seen.
func (d *driver) watchLease(ctx context.Context) {
	leases := d.admin.CoordinationV1().Leases(d.ns)
	rv := ""
	for ctx.Err() == nil {
		if rv == "" {
			l, err := leases.Get(ctx, "chaos", metav1.GetOptions{})
			switch {
			case err == nil:
				d.recordLease(l, false)
				rv = l.ResourceVersion
			default:
				list, err := leases.List(ctx, metav1.ListOptions{})
				if err != nil {
					sleepCtx(ctx, 100*time.Millisecond)
					continue
				}
				rv = list.ResourceVersion
			}
		}
		w, err := leases.Watch(ctx, metav1.ListOptions{ResourceVersion: rv, FieldSelector: "metadata.name=chaos"})
		if err != nil {
			if ctx.Err() == nil {
				d.leaseNote("watch from %s: %v; re-reading", rv, err)
				rv = ""
				sleepCtx(ctx, 100*time.Millisecond)
			}
			continue
		}
		for ev := range w.ResultChan() {
			switch ev.Type {
			case watch.Added, watch.Modified, watch.Deleted:
				l := ev.Object.(*coordinationv1.Lease)
				d.recordLease(l, ev.Type == watch.Deleted)
				rv = l.ResourceVersion
			case watch.Error:
				if ctx.Err() == nil {
					d.leaseNote("watch error event after %s (%v); re-reading (versions may be missed)", rv, apierrors.FromObject(ev.Object))
				}
				rv = ""
			}
		}
		w.Stop()
	}
}

func (d *driver) leaseNote(format string, args ...any) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.rec.LeaseNotes = append(d.rec.LeaseNotes, fmt.Sprintf(format, args...))
}

func (d *driver) recordLease(l *coordinationv1.Lease, deleted bool) {
	v := LeaseVersion{RV: l.ResourceVersion, Seen: time.Now(), Deleted: deleted}
	if l.Spec.HolderIdentity != nil {
		v.Holder = *l.Spec.HolderIdentity
	}
	if l.Spec.LeaseTransitions != nil {
		v.Transitions = *l.Spec.LeaseTransitions
	}
	if l.Spec.AcquireTime != nil {
		v.Acquire = l.Spec.AcquireTime.Time
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if n := len(d.rec.Lease); n > 0 && d.rec.Lease[n-1].RV == v.RV {
		return
	}
	d.rec.Lease = append(d.rec.Lease, v)
}

func writeKubeconfig(path, server string) error {
	kc := clientcmdapi.NewConfig()
	kc.Clusters["chaos"] = &clientcmdapi.Cluster{Server: server}
	kc.AuthInfos["chaos"] = &clientcmdapi.AuthInfo{}
	kc.Contexts["chaos"] = &clientcmdapi.Context{Cluster: "chaos", AuthInfo: "chaos"}
	kc.CurrentContext = "chaos"
	return clientcmd.WriteToFile(*kc, path)
}
