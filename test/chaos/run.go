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
// Beyond the candidates' faults, a run can fail the control plane itself
// (kube-apiserver and etcd SIGKILLed and restarted, SIGSTOPped, etcd
// compacted under watches for real 410 Gone answers), spread the
// candidates over two kube-apiservers on one etcd (moved between them as
// by a load balancer, one server's watch streams lagging), and run other
// modes: "yield" (the leader is asked to yield, by Elector.Yield or by
// the preferred-holder annotation, among the faults) and "shard" (a shard
// group, checked shard by shard).
//
// `make chaos` runs 300 faults (test/cmd/chaos); the package tests run
// short versions of every mode and kind.
package chaos

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/leasehold/leasehold"
	"github.com/leasehold/leasehold/test/controlplane"
	"github.com/leasehold/leasehold/test/internal/sleep"
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

	// Mode is ModeElection (default), ModeYield or ModeShard.
	Mode string
	// Shards is K in ModeShard; default 64.
	Shards int
	// Weights mixes the fault kinds (PlanMix); nil: Plan, the
	// candidates' faults.
	Weights map[Kind]int
	// Script, if set, is the plan, in order (LagPlan); Faults and
	// Weights are then ignored.
	Script []Fault
	// ControlPlane lets a run fail etcd and kube-apiserver; required
	// by ControlPlaneKinds and by APIServers = 2. Admin defaults to its
	// Config.
	ControlPlane *controlplane.ControlPlane
	// APIServers is 1 (default) or 2: the candidates are spread over two
	// kube-apiservers on one etcd (AddAPIServer if needed).
	APIServers int
	// WatchCacheOff says the kube-apiservers run with
	// --watch-cache=false: each KindCompact fault must then bring real
	// 410s.
	WatchCacheOff bool
}

// The modes of a run.
const (
	ModeElection = "election"
	ModeYield    = "yield"
	ModeShard    = "shard"
	ModeFenced   = "fenced"
)

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
	Target     string // a candidate, or a server (etcd, kube-apiserver[-2])
	TargetInc  int
	WasLeader  bool
	Start      time.Time
	Heal       time.Time // the fault's end; for a kill, the kill itself; for a control-plane fault, when the API server answered again
	NoLeaderIn string    // set if no stable leader came before the fault
	// To is a yield's named successor ("" for anyone).
	To string
	// Gone counts the real 410 Gone answers the candidates got from the
	// fault's start to the next fault's.
	Gone int64
	// Revision is the etcd revision a KindCompact fault compacted to.
	Revision int64
	// Down is how long a killed or paused server did not answer.
	Down time.Duration

	// Next and Takeover: who led next, and how long after Start (the
	// measurement kinds, LagKinds).
	Next     string
	Takeover time.Duration

	goneAtStart int64 // the proxies' 410 count when the fault started
}

// LeaseVersion is one version of the Lease seen by the admin watch.
type LeaseVersion struct {
	RV          string
	Holder      string
	Transitions int32
	Acquire     time.Time
	Seen        time.Time
	Deleted     bool
	// Preferred is the preferred-holder annotation ("" if absent; "*"
	// or "" as written for anyone is kept as written).
	Preferred    string
	HasPreferred bool
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
	Writes     []FencedWrite // ModeFenced: the fenced object's versions
	Problems   []string      // liveness and harness problems
	// LostEvents describes candidate stdout lines that could not be read
	// as events (not an event, cut short, a read error): the work
	// intervals may be incomplete, so Check fails the run.
	LostEvents []string
	Proxies    map[string]*ProxyStats
}

type driver struct {
	cfg       Config
	admin     kubernetes.Interface
	probes    []kubernetes.Interface // one short-timeout admin client per kube-apiserver
	ns        string
	tl        *walkthrough.Timeline
	proxies   map[string]*Proxy
	ids       []string
	upstreams []*Upstream
	servers   []*controlplane.Server // kube-apiservers, as upstreams

	mu       sync.Mutex
	procs    map[string]*walkthrough.Process
	inc      map[string]int
	open     map[string]map[string]time.Time // id -> key ("" or a shard) -> START of the current incarnation's open term
	paused   map[string]bool
	dead     map[string]bool
	ready    map[string]bool // the current incarnation has written an event
	expected map[string]bool // "id#inc" whose exit the harness caused
	shutting bool
	files    []*os.File
	rec      *Record
	wg       sync.WaitGroup
	lastGone int64
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
	if cfg.Mode == "" {
		cfg.Mode = ModeElection
	}
	if cfg.Mode == ModeShard && cfg.Shards == 0 {
		cfg.Shards = 64
	}
	if cfg.APIServers == 0 {
		cfg.APIServers = 1
	}
	if cfg.Admin == nil && cfg.ControlPlane != nil {
		cfg.Admin = cfg.ControlPlane.Config()
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	adminCS, err := kubernetes.NewForConfig(cfg.Admin)
	if err != nil {
		return nil, err
	}
	d := &driver{
		cfg: cfg, admin: adminCS, tl: walkthrough.NewTimeline(),
		proxies: map[string]*Proxy{}, procs: map[string]*walkthrough.Process{},
		inc: map[string]int{}, open: map[string]map[string]time.Time{}, paused: map[string]bool{},
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

	if err := d.setUpstreams(ctx); err != nil {
		return nil, err
	}
	if cfg.Mode == ModeFenced {
		remove, err := d.installFence(ctx)
		if err != nil {
			return nil, err
		}
		defer remove()
	}

	// Follow the Lease (and the fenced object) from before the first
	// candidate starts.
	wctx, stopWatch := context.WithCancel(context.WithoutCancel(ctx))
	watchDone := make(chan struct{})
	go func() { defer close(watchDone); d.watchLease(wctx) }()
	fencedDone := make(chan struct{})
	go func() {
		defer close(fencedDone)
		if cfg.Mode == ModeFenced {
			d.watchFenced(wctx)
		}
	}()

	defer func() {
		d.shutdown()
		// Let the watch see the final release.
		time.Sleep(500 * time.Millisecond)
		stopWatch()
		<-watchDone
		<-fencedDone
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
		p, err := NewProxyTo(id, d.upstreams, (i-1)%len(d.upstreams))
		if err != nil {
			return d.rec, err
		}
		d.proxies[id] = p
		as := ""
		if cfg.Mode == ModeFenced {
			as = d.fenceWriter()
		}
		if err := writeKubeconfig(filepath.Join(cfg.WorkDir, id+".kubeconfig"), p.URL, as); err != nil {
			return d.rec, err
		}
	}
	for _, id := range d.ids {
		if err := d.start(id); err != nil {
			return d.rec, err
		}
	}
	t := cfg.Timings
	what := "Lease " + d.ns + "/chaos"
	if cfg.Mode == ModeShard {
		what = fmt.Sprintf("shard group %s/chaos (K=%d)", d.ns, cfg.Shards)
	}
	d.logf("chaos: mode %s, %d candidates on %s via %d kube-apiserver(s) (LeaseDuration %v, RenewDeadline %v, RetryPeriod %v), %d faults, seed %d, logs in %s",
		cfg.Mode, cfg.N, what, len(d.upstreams), t.LeaseDuration, t.RenewDeadline, t.RetryPeriod, cfg.Faults, cfg.Seed, cfg.WorkDir)
	if _, err := d.waitStable(ctx, 0, 60*time.Second); err != nil {
		return d.rec, fmt.Errorf("no first leader: %w", err)
	}
	d.rec.FirstLead = time.Now()
	if cfg.Mode == ModeFenced {
		if err := d.waitFenceEnforced(ctx); err != nil {
			return d.rec, err
		}
		d.logf("chaos: the fence policy is enforced; the work writes %s/%s as %s", d.ns, FencedObject, d.fenceWriter())
	}

	plan := Plan(cfg.Seed, cfg.Faults, t)
	switch {
	case cfg.Script != nil:
		plan = cfg.Script
	case cfg.Weights != nil:
		plan = PlanMix(cfg.Seed, cfg.Faults, t, cfg.Weights)
	}
	for _, f := range plan {
		if ctx.Err() != nil {
			return d.rec, ctx.Err()
		}
		inj := d.inject(ctx, f)
		d.mu.Lock()
		d.countGone(inj.goneAtStart)
		d.rec.Faults = append(d.rec.Faults, inj)
		d.mu.Unlock()
		role := "follower"
		switch {
		case slices.Contains(ControlPlaneKinds, f.Kind):
			role = "control plane"
		case f.Kind == KindLag:
			role = "server"
		case inj.WasLeader:
			role = "leader"
		}
		d.logf("fault %3d/%d %8.1fs  %-26s on %s (%s) %s", f.Index, cfg.Faults, inj.Start.Sub(d.rec.Began).Seconds(), f.Kind, inj.Target, role, inj.params())
	}
	if _, err := d.waitStable(ctx, 0, d.recoveryTimeout()); err != nil {
		d.problem("no stable leader after the last fault: %v", err)
	}
	gone := d.goneTotal()
	d.mu.Lock()
	d.countGone(gone)
	d.mu.Unlock()
	return d.rec, nil
}

// countGone gives the previous fault the 410s counted from its start to
// total (the count at the next fault's start).
func (d *driver) countGone(total int64) {
	total = max(total, d.lastGone) // a fault cut short by ctx has no count
	if n := len(d.rec.Faults); n > 0 {
		d.rec.Faults[n-1].Gone = total - d.lastGone
	}
	d.lastGone = total
}

func (c *Config) validate() error {
	switch c.Mode {
	case ModeElection, ModeYield, ModeShard, ModeFenced:
	default:
		return fmt.Errorf("chaos: unknown mode %q", c.Mode)
	}
	if c.Admin == nil {
		return errors.New("chaos: Config.Admin or Config.ControlPlane is required")
	}
	if c.APIServers < 1 || c.APIServers > 2 {
		return fmt.Errorf("chaos: %d kube-apiservers; 1 or 2", c.APIServers)
	}
	if c.APIServers > 1 && c.ControlPlane == nil {
		return errors.New("chaos: two kube-apiservers need Config.ControlPlane")
	}
	if c.Script != nil {
		c.Faults = len(c.Script)
	}
	weights := maps.Clone(c.Weights)
	for _, f := range c.Script {
		if weights == nil {
			weights = map[Kind]int{}
		}
		weights[f.Kind]++
	}
	for k, w := range weights {
		if w <= 0 {
			continue
		}
		switch {
		case !slices.Contains(Kinds, k):
			return fmt.Errorf("chaos: unknown fault kind %q", k)
		case slices.Contains(ControlPlaneKinds, k) && c.ControlPlane == nil:
			return fmt.Errorf("chaos: %s needs Config.ControlPlane", k)
		case (slices.Contains(HAKinds, k) || slices.Contains(LagKinds, k)) && c.APIServers < 2:
			return fmt.Errorf("chaos: %s needs two kube-apiservers", k)
		case slices.Contains(YieldKinds, k) && c.Mode != ModeYield:
			return fmt.Errorf("chaos: %s needs mode %s", k, ModeYield)
		}
	}
	return nil
}

// setUpstreams finds (or, for two, starts) the kube-apiservers the
// proxies forward to.
func (d *driver) setUpstreams(ctx context.Context) error {
	var cfgs []*rest.Config
	if cp := d.cfg.ControlPlane; cp != nil {
		servers, err := cp.APIServers()
		if err != nil {
			return err
		}
		for len(servers) < d.cfg.APIServers {
			s, err := cp.AddAPIServer(ctx)
			if err != nil {
				return err
			}
			servers = append(servers, s)
		}
		d.servers = servers[:d.cfg.APIServers]
		for _, s := range d.servers {
			cfgs = append(cfgs, s.Config())
		}
	} else {
		cfgs = []*rest.Config{d.cfg.Admin}
	}
	for i, c := range cfgs {
		name := "kube-apiserver"
		if d.servers != nil {
			name = d.servers[i].Name
		}
		u, err := NewUpstream(name, c)
		if err != nil {
			return err
		}
		d.upstreams = append(d.upstreams, u)
		c = rest.CopyConfig(c)
		c.Timeout = 3 * time.Second
		cs, err := kubernetes.NewForConfig(c)
		if err != nil {
			return err
		}
		d.probes = append(d.probes, cs)
	}
	return nil
}

func (d *driver) goneTotal() int64 {
	var n int64
	for _, p := range d.proxies {
		n += p.Stats.Gone.Load()
	}
	return n
}

func (inj Injected) params() string {
	s := inj.Fault.Params()
	switch {
	case inj.Kind == KindCompact && inj.Revision > 0:
		s = fmt.Sprintf("to revision %d", inj.Revision)
	case (inj.Kind == KindYield || inj.Kind == KindAnnotate) && inj.To != "":
		s = "to " + inj.To
	}
	if inj.Down > 0 {
		s += fmt.Sprintf(", not answering for %v", inj.Down.Round(time.Millisecond))
	}
	return s
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
		if d.open[e.Proc] == nil {
			d.open[e.Proc] = map[string]time.Time{}
		}
		d.open[e.Proc][eventKey(e)] = e.Recv
	case "END":
		delete(d.open[e.Proc], eventKey(e))
	}
}

// eventKey is what a START, END or OSL line is about: "" for the
// election, the shard's number in ModeShard.
func eventKey(e walkthrough.Event) string {
	if len(e.Fields) >= 2 {
		return e.Fields[1]
	}
	return ""
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
			"-yield-file=" + filepath.Join(d.cfg.WorkDir, id+".yield"),
			"-shards=" + strconv.Itoa(d.cfg.Shards),
			"-fenced=" + strconv.FormatBool(d.cfg.Mode == ModeFenced),
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
		leader, since := d.leaderLocked()
		ok := leader != "" && time.Since(since) >= settle && len(d.paused) == 0 && len(d.dead) == 0 && len(d.ready) == len(d.ids)
		d.mu.Unlock()
		if ok {
			return leader, nil
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("no stable leader within %v", timeout)
		}
		if sleep.For(ctx, 20*time.Millisecond) != nil {
			return "", ctx.Err()
		}
	}
}

// leaderLocked returns the leader and since when it has led. In
// ModeShard, "the leader" is the member running the most shards once
// every shard runs somewhere, and since is the newest shard START.
func (d *driver) leaderLocked() (string, time.Time) {
	leader, since := "", time.Time{}
	if d.cfg.Mode != ModeShard {
		for id, keys := range d.open {
			if t, ok := keys[""]; ok && t.After(since) {
				leader, since = id, t
			}
		}
		return leader, since
	}
	running, most := map[string]bool{}, -1
	for _, id := range d.ids {
		keys := d.open[id]
		for k, t := range keys {
			running[k] = true
			if t.After(since) {
				since = t
			}
		}
		if len(keys) > most {
			leader, most = id, len(keys)
		}
	}
	if len(running) < d.cfg.Shards {
		return "", time.Time{}
	}
	return leader, since
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
	inj.goneAtStart = d.goneTotal()
	if slices.Contains(ControlPlaneKinds, f.Kind) || f.Kind == KindLag {
		return d.injectServer(ctx, f, inj)
	}
	if slices.Contains(LagKinds, f.Kind) {
		return d.injectLag(ctx, f, inj, leader)
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
	wait := func(w time.Duration) { sleep.For(ctx, w) }

	inj.Start = time.Now()
	switch f.Kind {
	case KindMove:
		px.SetUpstream((px.Upstream() + 1) % len(d.upstreams))
		inj.To = d.upstreams[px.Upstream()].Name
	case KindYield, KindAnnotate:
		to := followers[(f.Pick/2)%len(followers)]
		if f.ToAnyone || !inj.WasLeader {
			to = ""
		}
		if !inj.WasLeader {
			// No stable leader to ask: the request goes to a
			// follower, which must refuse it (Yield) or ignore it.
			d.problem("fault %d: %s with no stable leader", f.Index, f.Kind)
		}
		inj.To = to
		d.mu.Lock()
		termStart := d.open[target][""]
		d.mu.Unlock()
		var err error
		if f.Kind == KindYield {
			err = d.yield(p, target, to)
		} else {
			err = d.annotate(ctx, to)
		}
		if err != nil {
			d.problem("fault %d: %s: %v", f.Index, f.Kind, err)
		}
		inj.Start = time.Now() // the request is out
		inj.Heal = inj.Start
		// The next fault waits until the handoff is done: the yielder's
		// term has ended and a new one has begun.
		if !d.waitHandoff(ctx, target, termStart, inj.Start) {
			d.problem("fault %d: no new term within %v of the %s request", f.Index, d.recoveryTimeout(), f.Kind)
		}
		return inj
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
		inj.Heal = d.kill(p, target)
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

// waitHandoff waits until from's term has ended and a term has started
// after since.
// (from term started at term; a term of from that starts later counts,
// for a request that found from's term ending another way.)
// kill SIGKILLs the process id (incarnation p), records the kill as
// expected, waits for the process to exit and returns when it was killed.
func (d *driver) kill(p *walkthrough.Process, id string) time.Time {
	d.mu.Lock()
	d.expected[fmt.Sprintf("%s#%d", id, p.Inc)] = true
	d.dead[id] = true
	at, err := p.Kill()
	delete(d.open, id)
	d.rec.Kills = append(d.rec.Kills, Kill{Proc: id, Inc: p.Inc, At: at})
	d.mu.Unlock()
	if err != nil {
		d.problem("kill %s: %v", id, err)
	}
	<-p.Done()
	return at
}

func (d *driver) waitHandoff(ctx context.Context, from string, term, since time.Time) bool {
	deadline := time.Now().Add(d.recoveryTimeout())
	for time.Now().Before(deadline) {
		d.mu.Lock()
		cur, still := d.open[from][""]
		leader, at := d.leaderLocked()
		d.mu.Unlock()
		if (!still || !cur.Equal(term)) && leader != "" && at.After(since) {
			return true
		}
		if sleep.For(ctx, 10*time.Millisecond) != nil {
			return false
		}
	}
	return false
}

// yield asks candidate target (process p) to yield to to ("": anyone).
func (d *driver) yield(p *walkthrough.Process, target, to string) error {
	if to == "" {
		to = "*"
	}
	if err := os.WriteFile(filepath.Join(d.cfg.WorkDir, target+".yield"), []byte(to+"\n"), 0o644); err != nil {
		return err
	}
	_, err := p.Signal(syscall.SIGUSR1)
	return err
}

// annotate sets the preferred-holder annotation on the Lease ("": anyone).
func (d *driver) annotate(ctx context.Context, to string) error {
	if to == "" {
		to = "*"
	}
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{leasehold.PreferredHolderAnnotation: to}}})
	if err != nil {
		return err
	}
	_, err = d.probes[0].CoordinationV1().Leases(d.ns).Patch(ctx, "chaos", types.MergePatchType, patch, metav1.PatchOptions{})
	return err
}

// injectServer fails a server: a kube-apiserver or etcd, killed or
// paused; etcd compacted under the watches; a server's watches lagging.
// A kill or pause heals when every kube-apiserver answers again.
func (d *driver) injectServer(ctx context.Context, f Fault, inj Injected) Injected {
	cp := d.cfg.ControlPlane
	wait := func(w time.Duration) { sleep.For(ctx, w) }
	var srv *controlplane.Server
	switch f.Kind {
	case KindAPIKill, KindAPIPause:
		srv = d.servers[f.Pick%len(d.servers)]
	case KindEtcdKill, KindEtcdPause:
		var err error
		if srv, err = cp.Etcd(); err != nil {
			d.problem("fault %d: %v", f.Index, err)
			return inj
		}
	case KindCompact:
		inj.Target = "etcd"
	case KindLag:
		inj.Target = d.upstreams[f.Pick%len(d.upstreams)].Name
	}
	if srv != nil {
		inj.Target = srv.Name
	}
	inj.Start = time.Now()
	switch f.Kind {
	case KindAPIKill, KindEtcdKill:
		if err := srv.Kill(); err != nil {
			d.problem("fault %d: %v", f.Index, err)
		}
		wait(f.RestartAfter)
		// The restart is not cancelled with ctx: the control plane must
		// be whole for the next run or the shutdown.
		if err := srv.Start(context.WithoutCancel(ctx)); err != nil {
			d.problem("fault %d: %v", f.Index, err)
		}
	case KindAPIPause, KindEtcdPause:
		if err := srv.Pause(); err != nil {
			d.problem("fault %d: %v", f.Index, err)
		}
		wait(f.Window)
		if err := srv.Resume(); err != nil {
			d.problem("fault %d: %v", f.Index, err)
		}
	case KindCompact:
		// The watches fall behind while etcd moves on; then etcd is
		// compacted past what they saw, and they are dropped: each
		// resumes from a compacted version. etcd moves on by the
		// leader's renewals (RetryPeriod) and by one write of the
		// harness's own, for when nobody leads (after a yield or a
		// kill): without it, a compaction to a head the watches had
		// already seen brought no 410 (soak, yield seed 102, fault 189).
		for _, p := range d.proxies {
			p.StallWatches()
		}
		wait(2*d.cfg.Timings.RetryPeriod + 200*time.Millisecond)
		if _, err := d.probes[0].CoreV1().ConfigMaps(d.ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{GenerateName: "compaction-"}}, metav1.CreateOptions{}); err != nil {
			d.problem("fault %d: a write to move etcd past the watches: %v", f.Index, err)
		}
		rev, err := cp.CompactEtcd(ctx)
		if err != nil {
			d.problem("fault %d: compact: %v", f.Index, err)
		}
		inj.Revision = rev
		for _, p := range d.proxies {
			p.DropWatches()
			p.Heal()
		}
		inj.Heal = time.Now()
		// The resumed watches' answers belong to this fault: wait for
		// the first 410 (a watch resumes at once, but kube-apiserver may
		// take a moment to open its etcd watch).
		for deadline := time.Now().Add(d.cfg.Timings.LeaseDuration + 5*time.Second); d.goneTotal() == inj.goneAtStart && time.Now().Before(deadline); {
			sleep.For(ctx, 20*time.Millisecond)
		}
		return inj
	case KindLag:
		up := d.upstreams[f.Pick%len(d.upstreams)]
		up.SetWatchLag(f.Lag)
		wait(f.Window)
		up.SetWatchLag(0)
		inj.Heal = time.Now()
		return inj
	}
	if err := d.waitServing(context.WithoutCancel(ctx)); err != nil {
		d.problem("fault %d (%s): %v", f.Index, f.Kind, err)
	}
	inj.Heal = time.Now()
	inj.Down = inj.Heal.Sub(inj.Start)
	return inj
}

// waitServing waits until every kube-apiserver answers a read that
// reaches etcd.
func (d *driver) waitServing(ctx context.Context) error {
	deadline := time.Now().Add(d.recoveryTimeout())
	for _, cs := range d.probes {
		for {
			_, err := cs.CoreV1().Namespaces().Get(ctx, d.ns, metav1.GetOptions{})
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("the control plane did not answer within %v: %v", d.recoveryTimeout(), err)
			}
			sleep.For(ctx, 50*time.Millisecond)
		}
	}
	return nil
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
// resumed from the last version seen. With two kube-apiservers it moves
// to the other one when a watch cannot be opened.
func (d *driver) watchLease(ctx context.Context) {
	clients := []kubernetes.Interface{d.admin}
	for _, s := range d.servers[min(1, len(d.servers)):] {
		if cs, err := kubernetes.NewForConfig(s.Config()); err == nil {
			clients = append(clients, cs)
		}
	}
	cur := 0
	next := func() { cur = (cur + 1) % len(clients) }
	rv := ""
	for ctx.Err() == nil {
		leases := clients[cur].CoordinationV1().Leases(d.ns)
		if rv == "" {
			l, err := leases.Get(ctx, "chaos", metav1.GetOptions{})
			switch {
			case err == nil:
				d.recordLease(l, false)
				rv = l.ResourceVersion
			case apierrors.IsNotFound(err):
				list, err := leases.List(ctx, metav1.ListOptions{})
				if err != nil {
					next()
					sleep.For(ctx, 100*time.Millisecond)
					continue
				}
				rv = list.ResourceVersion
			default:
				next()
				sleep.For(ctx, 100*time.Millisecond)
				continue
			}
		}
		w, err := leases.Watch(ctx, metav1.ListOptions{ResourceVersion: rv, FieldSelector: "metadata.name=chaos"})
		if err != nil {
			if ctx.Err() == nil {
				if apierrors.IsResourceExpired(err) || apierrors.IsGone(err) {
					d.leaseNote("watch from %s: %v; re-reading", rv, err)
					rv = ""
				} else {
					next()
				}
				sleep.For(ctx, 100*time.Millisecond)
			}
			continue
		}
		for ev := range w.ResultChan() {
			switch ev.Type {
			case watch.Added, watch.Modified, watch.Deleted:
				l := ev.Object.(*coordinationv1.Lease)
				d.recordLease(l, ev.Type == watch.Deleted)
				rv = l.ResourceVersion
			case watch.Bookmark:
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
	v.Preferred, v.HasPreferred = l.Annotations[leasehold.PreferredHolderAnnotation]
	d.mu.Lock()
	defer d.mu.Unlock()
	if n := len(d.rec.Lease); n > 0 && d.rec.Lease[n-1].RV == v.RV {
		return
	}
	d.rec.Lease = append(d.rec.Lease, v)
}

// writeKubeconfig writes a kubeconfig for server; as, if set, is the user
// to impersonate (the proxy forwards with the admin's credentials, which
// may impersonate anyone).
func writeKubeconfig(path, server, as string) error {
	kc := clientcmdapi.NewConfig()
	kc.Clusters["chaos"] = &clientcmdapi.Cluster{Server: server}
	kc.AuthInfos["chaos"] = &clientcmdapi.AuthInfo{Impersonate: as}
	kc.Contexts["chaos"] = &clientcmdapi.Context{Cluster: "chaos", AuthInfo: "chaos"}
	kc.CurrentContext = "chaos"
	return clientcmd.WriteToFile(*kc, path)
}
