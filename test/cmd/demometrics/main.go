// Command demometrics is `make demo-metrics`: leasehold's metrics and alert
// rules on a real Prometheus, built from source (hack/prometheus/build.sh
// --prometheus), scraping real processes on a real control plane.
//
//   - Three examples/leader-election processes campaign for one Lease
//     (15s/10s/2s) with -metrics-addr; Prometheus scrapes them every
//     second and evaluates leasehold's rules, generated for that interval
//     (monitoring/cmd/generate -scrape-interval 1s).
//   - SIGINT to the leader: a handover in milliseconds; SIGKILL to the next
//     leader: nobody leads until its Lease expires. LeaseholdNoLeader must
//     go pending after the kill and resolve once the successor leads,
//     without firing; LeaseholdSplitBrain must never fire.
//   - Three examples/sharded-controller processes share 8 shards; the
//     shard counts per member are read back from Prometheus, before and
//     after a SIGKILL of one of them.
//
// It prints the alert timeline (every state change of every alert, from
// Prometheus's /api/v1/alerts, polled every 250ms) and renders the run from
// Prometheus's query API into a PNG (-plot, docs/metrics-scenario.png by
// default). Everything else goes under bin/demo-metrics/. It exits 1 if an
// expectation fails.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/leasehold/leasehold/test/controlplane"
	"github.com/leasehold/leasehold/test/walkthrough"
)

const (
	leaseDuration = 15 * time.Second
	renewDeadline = 10 * time.Second
	retryPeriod   = 2 * time.Second
	scrape        = time.Second
	shardSettle   = 30 * time.Second
	shards        = 8
	election      = "default/example"
	group         = "default/demo"
)

func main() { os.Exit(run()) }

// proc is one example process and the address Prometheus scrapes.
type proc struct {
	name, addr string
	p          *walkthrough.Process
}

func run() int {
	plotPath := flag.String("plot", "", "PNG to render the run into (default: docs/metrics-scenario.png)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	began := time.Now()

	root, err := walkthrough.RepoRoot()
	if err != nil {
		return fail(err)
	}
	if *plotPath == "" {
		*plotPath = filepath.Join(root, "docs", "metrics-scenario.png")
	}
	dir := filepath.Join(root, "bin", "demo-metrics")
	if err := os.RemoveAll(filepath.Join(dir, "tsdb")); err != nil {
		return fail(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "logs"), 0o755); err != nil {
		return fail(err)
	}
	promBin := filepath.Join(root, "bin", "prometheus", "prometheus")
	if _, err := os.Stat(promBin); err != nil {
		return fail(fmt.Errorf("%s is missing: build it with `make prometheus` (hack/prometheus/build.sh --prometheus)", promBin))
	}

	fmt.Println("== leasehold metrics on a real Prometheus: three elections, three shard members, the alert rules")
	gen := exec.Command("go", "run", "./cmd/generate", "-out", dir, "-scrape-interval", scrape.String(), "-shard-settle", shardSettle.String())
	gen.Dir = filepath.Join(root, "monitoring")
	if out, err := gen.CombinedOutput(); err != nil {
		return fail(fmt.Errorf("generate the rules: %v\n%s", err, out))
	}
	rules := filepath.Join(dir, "leasehold-rules.yaml")
	fmt.Printf("rules for %v scrapes: %s (LeaseholdNoLeader for %v, LeaseholdSplitBrain for %v)\n",
		scrape, rel(root, rules), leaseDuration+2*scrape, leaseDuration-renewDeadline+2*scrape)
	leBin, err := walkthrough.BuildExample(dir)
	if err != nil {
		return fail(err)
	}
	shBin, err := walkthrough.Build(filepath.Join(root, "examples"), "./sharded-controller", filepath.Join(dir, "sharded-controller"))
	if err != nil {
		return fail(err)
	}

	cp, err := controlplane.Start()
	if err != nil {
		return fail(err)
	}
	defer func() {
		if err := cp.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "demo-metrics:", err)
		}
		fmt.Printf("demo-metrics took %v in all\n", time.Since(began).Round(time.Second))
	}()
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := cp.WriteKubeconfig(kubeconfig, nil); err != nil {
		return fail(err)
	}

	tl := walkthrough.NewTimeline()
	var all []*proc
	defer func() {
		for _, p := range all {
			if p.p != nil {
				_ = p.p.Stop(5 * time.Second)
			}
		}
	}()
	start := func(name, bin string, args ...string) (*proc, error) {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		pr := &proc{name: name, addr: fmt.Sprintf("127.0.0.1:%d", port)}
		logf, err := os.Create(filepath.Join(dir, "logs", name+".log"))
		if err != nil {
			return nil, err
		}
		args = append(args, "-kubeconfig="+kubeconfig, "-id="+name, "-metrics-addr="+pr.addr,
			"-lease-duration="+leaseDuration.String(), "-renew-deadline="+renewDeadline.String(), "-retry-period="+retryPeriod.String())
		pr.p, err = walkthrough.StartProcess(walkthrough.ProcessOptions{Name: name, Path: bin, Args: args, Stderr: logf, Timeline: tl})
		if err != nil {
			return nil, err
		}
		all = append(all, pr)
		return pr, nil
	}
	var electors, members []*proc
	for _, n := range []string{"p1", "p2", "p3"} {
		pr, err := start(n, leBin, "-lease-lock-name=example", "-lease-lock-namespace=default")
		if err != nil {
			return fail(err)
		}
		electors = append(electors, pr)
	}
	for _, n := range []string{"s1", "s2", "s3"} {
		pr, err := start(n, shBin, "-lease-namespace=default", "-namespace=default", "-group=demo", fmt.Sprintf("-shards=%d", shards))
		if err != nil {
			return fail(err)
		}
		members = append(members, pr)
	}

	prom, err := startPrometheus(dir, promBin, rules, electors, members)
	if err != nil {
		return fail(err)
	}
	defer prom.stop()
	fmt.Printf("Prometheus %s on %s scrapes every %v; logs and data under %s\n\n", prom.version, prom.url, scrape, rel(root, dir))

	at0 := time.Now()
	sec := func(t time.Time) float64 { return t.Sub(at0).Seconds() }
	say := func(format string, args ...any) {
		fmt.Printf("[%7.3fs] %s\n", sec(time.Now()), fmt.Sprintf(format, args...))
	}
	w := newWatcher(prom, at0)
	go w.run(ctx)

	var problems []string
	expect := func(ok bool, format string, args ...any) {
		if !ok {
			problems = append(problems, fmt.Sprintf(format, args...))
			say("UNEXPECTED: "+format, args...)
		}
	}
	leader := func(timeout time.Duration, not ...string) (string, error) {
		var who string
		err := poll(ctx, timeout, func() (bool, error) {
			res, err := prom.query(`leader_election_master_status{job="election"} == 1`)
			if err != nil || len(res) != 1 || slices.Contains(not, res[0].Metric["instance"]) {
				return false, err
			}
			who = res[0].Metric["instance"]
			return true, nil
		})
		return who, err
	}
	find := func(name string) *proc {
		for _, p := range electors {
			if p.name == name {
				return p
			}
		}
		return nil
	}

	// --- the election -------------------------------------------------
	first, err := leader(30 * time.Second)
	if err != nil {
		return fail(fmt.Errorf("no leader seen by Prometheus: %w", err))
	}
	say("Prometheus sees %s leading %s", first, election)
	sleep(ctx, 10*time.Second)
	sigint, _ := find(first).p.Interrupt()
	say("SIGINT to %s: it releases the Lease once its work has stopped", first)
	second, err := leader(30*time.Second, first)
	if err != nil {
		return fail(fmt.Errorf("no successor after the SIGINT: %w", err))
	}
	say("Prometheus sees %s leading (%v after the SIGINT, at 1s scrapes)", second, time.Since(sigint).Round(time.Millisecond))
	sleep(ctx, 10*time.Second)
	sigkill, _ := find(second).p.Kill()
	say("SIGKILL to %s: nobody releases; the last process waits for the Lease to expire", second)
	third, err := leader(60*time.Second, first, second)
	if err != nil {
		return fail(fmt.Errorf("no successor after the SIGKILL: %w", err))
	}
	say("Prometheus sees %s leading (%v after the SIGKILL)", third, time.Since(sigkill).Round(time.Millisecond))
	sleep(ctx, 5*time.Second)
	electionEnd := time.Now()

	// --- the shard group ----------------------------------------------
	counts := func() (map[string]float64, float64, error) {
		res, err := prom.query(`leasehold_shards_owned{job="shards"}`)
		if err != nil {
			return nil, 0, err
		}
		out, sum := map[string]float64{}, 0.0
		for _, r := range res {
			out[r.Metric["instance"]] = r.Value
			sum += r.Value
		}
		return out, sum, nil
	}
	var c map[string]float64
	err = poll(ctx, 60*time.Second, func() (bool, error) {
		var sum float64
		var err error
		c, sum, err = counts()
		return err == nil && len(c) == 3 && sum == shards && spread(c) <= 1, err
	})
	if err != nil {
		return fail(fmt.Errorf("the shard group did not settle over 3 members: %v (last %v)", err, c))
	}
	say("shards owned per member, from Prometheus: %s", show(c))
	sleep(ctx, 5*time.Second)
	shardKill, _ := members[0].p.Kill()
	say("SIGKILL to %s", members[0].name)
	err = poll(ctx, 60*time.Second, func() (bool, error) {
		var sum float64
		var err error
		c, sum, err = counts()
		return err == nil && len(c) == 2 && sum == shards, err
	})
	if err != nil {
		return fail(fmt.Errorf("s1's shards were not taken over: %v (last %v)", err, c))
	}
	say("shards owned per member, from Prometheus: %s", show(c))
	moves, err := prom.query(`sum by (cause) (leasehold_shard_moves_total{job="shards"})`)
	if err != nil {
		return fail(err)
	}
	var mv []string
	for _, m := range moves {
		mv = append(mv, fmt.Sprintf("%s %.0f", m.Metric["cause"], m.Value))
	}
	sort.Strings(mv)
	say("shard moves by cause: %s", strings.Join(mv, ", "))
	sleep(ctx, 5*time.Second)
	end := time.Now()
	w.stop()

	// --- the alert timeline and the expectations ----------------------
	fmt.Println("\n== alert timeline (Prometheus /api/v1/alerts, polled every 250ms)")
	for _, ch := range w.changes() {
		fmt.Printf("  [%7.3fs] %-28s %-8s -> %s\n", sec(ch.at), ch.alert, ch.from, ch.to)
	}
	noLeader := w.states("LeaseholdNoLeader")
	expect(slices.Contains(noLeader, "pending"), "LeaseholdNoLeader never went pending after the SIGKILL")
	expect(!slices.Contains(noLeader, "firing"), "LeaseholdNoLeader fired")
	expect(w.last("LeaseholdNoLeader") == "inactive", "LeaseholdNoLeader is %s at the end, not resolved", w.last("LeaseholdNoLeader"))
	if at, ok := w.first("LeaseholdNoLeader", "pending"); ok {
		expect(at.After(sigkill), "LeaseholdNoLeader went pending before the SIGKILL, at %.3fs", sec(at))
	}
	for _, a := range []string{"LeaseholdSplitBrain", "LeaseholdShardOwnedTwice"} {
		expect(!slices.Contains(w.states(a), "firing"), "%s fired", a)
	}
	expect(len(c) == 2 && spread(c) <= 1, "after the SIGKILL the two members own %s", show(c))

	if err := plotRun(prom, *plotPath, at0, end, electionEnd, []mark{{"SIGINT " + first, sigint}, {"SIGKILL " + second, sigkill}}, mark{"SIGKILL " + members[0].name, shardKill}); err != nil {
		return fail(err)
	}
	fmt.Printf("\nplot of the run: %s\n", rel(root, *plotPath))
	if len(problems) > 0 {
		fmt.Println("\nFAILED:", strings.Join(problems, "; "))
		return 1
	}
	fmt.Println("\nPASS: LeaseholdNoLeader went pending after the SIGKILL and resolved without firing; LeaseholdSplitBrain never fired across two handovers; the shard counts per member came from Prometheus")
	return 0
}

// spread is the largest count minus the smallest.
func spread(c map[string]float64) float64 {
	var vs []float64
	for _, v := range c {
		vs = append(vs, v)
	}
	if len(vs) == 0 {
		return 0
	}
	return slices.Max(vs) - slices.Min(vs)
}

func show(c map[string]float64) string {
	var out []string
	for k, v := range c {
		out = append(out, fmt.Sprintf("%s %.0f", k, v))
	}
	sort.Strings(out)
	return strings.Join(out, ", ")
}

// --- Prometheus -------------------------------------------------------------

type prometheus struct {
	url     string
	version string
	cmd     *exec.Cmd
	done    chan struct{}
}

func startPrometheus(dir, bin, rules string, electors, members []*proc) (*prometheus, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	targets := func(ps []*proc) string {
		var b strings.Builder
		for _, p := range ps {
			fmt.Fprintf(&b, "      - targets: ['%s']\n        labels: {instance: %s}\n", p.addr, p.name)
		}
		return b.String()
	}
	cfg := fmt.Sprintf(`global:
  scrape_interval: %s
  scrape_timeout: 900ms
  evaluation_interval: %s
rule_files:
  - %s
scrape_configs:
  - job_name: election
    static_configs:
%s  - job_name: shards
    static_configs:
%s`, scrape, scrape, rules, targets(electors), targets(members))
	cfgPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(dir, "logs", "prometheus.log"))
	if err != nil {
		return nil, err
	}
	p := &prometheus{url: fmt.Sprintf("http://127.0.0.1:%d", port), done: make(chan struct{})}
	p.cmd = exec.Command(bin, "--config.file="+cfgPath, "--storage.tsdb.path="+filepath.Join(dir, "tsdb"),
		fmt.Sprintf("--web.listen-address=127.0.0.1:%d", port))
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	err = poll(context.Background(), 30*time.Second, func() (bool, error) {
		select {
		case <-p.done:
			return false, fmt.Errorf("prometheus exited; see %s", logf.Name())
		default:
		}
		resp, err := http.Get(p.url + "/-/ready")
		if err != nil {
			return false, nil
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	})
	if err != nil {
		p.stop()
		return nil, err
	}
	var bi struct {
		Data struct{ Version string } `json:"data"`
	}
	if err := p.get("/api/v1/status/buildinfo", nil, &bi); err == nil {
		p.version = bi.Data.Version
	}
	return p, nil
}

func (p *prometheus) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// get reads a JSON answer of the HTTP API into out.
func (p *prometheus) get(path string, q url.Values, out any) error {
	u := p.url + path
	if q != nil {
		u += "?" + q.Encode()
	}
	resp, err := http.Get(u)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s: %s", path, resp.Status, body)
	}
	return json.Unmarshal(body, out)
}

type sample struct {
	Metric map[string]string
	Value  float64
}

// query runs an instant query.
func (p *prometheus) query(expr string) ([]sample, error) {
	var r struct {
		Data struct {
			Result []struct {
				Metric map[string]string `json:"metric"`
				Value  [2]any            `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := p.get("/api/v1/query", url.Values{"query": {expr}}, &r); err != nil {
		return nil, err
	}
	var out []sample
	for _, s := range r.Data.Result {
		v, _ := strconv.ParseFloat(fmt.Sprint(s.Value[1]), 64)
		out = append(out, sample{s.Metric, v})
	}
	return out, nil
}

type series struct {
	Metric map[string]string
	T, V   []float64 // unix seconds, values
}

// queryRange runs a range query.
func (p *prometheus) queryRange(expr string, from, to time.Time, step time.Duration) ([]series, error) {
	var r struct {
		Data struct {
			Result []struct {
				Metric map[string]string `json:"metric"`
				Values [][2]any          `json:"values"`
			} `json:"result"`
		} `json:"data"`
	}
	q := url.Values{"query": {expr}, "start": {ts(from)}, "end": {ts(to)}, "step": {step.String()}}
	if err := p.get("/api/v1/query_range", q, &r); err != nil {
		return nil, err
	}
	var out []series
	for _, s := range r.Data.Result {
		se := series{Metric: s.Metric}
		for _, v := range s.Values {
			t, _ := v[0].(float64)
			x, _ := strconv.ParseFloat(fmt.Sprint(v[1]), 64)
			se.T, se.V = append(se.T, t), append(se.V, x)
		}
		out = append(out, se)
	}
	return out, nil
}

func ts(t time.Time) string { return strconv.FormatFloat(float64(t.UnixNano())/1e9, 'f', 3, 64) }

// --- the alert watcher ------------------------------------------------------

type change struct {
	at        time.Time
	alert     string
	from, to  string
	labelsKey string
}

// watcher polls /api/v1/alerts and records every change of state of every
// alert (by its labels): inactive, pending, firing.
type watcher struct {
	p    *prometheus
	at0  time.Time
	mu   sync.Mutex
	cur  map[string]string // alert labels -> state
	name map[string]string // alert labels -> alertname
	log  []change
	quit chan struct{}
	done chan struct{}
}

func newWatcher(p *prometheus, at0 time.Time) *watcher {
	return &watcher{p: p, at0: at0, cur: map[string]string{}, name: map[string]string{}, quit: make(chan struct{}), done: make(chan struct{})}
}

func (w *watcher) run(ctx context.Context) {
	defer close(w.done)
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		w.poll()
		select {
		case <-ctx.Done():
			return
		case <-w.quit:
			return
		case <-t.C:
		}
	}
}

func (w *watcher) stop() {
	close(w.quit)
	<-w.done
	w.poll()
}

func (w *watcher) poll() {
	var r struct {
		Data struct {
			Alerts []struct {
				Labels map[string]string `json:"labels"`
				State  string            `json:"state"`
			} `json:"alerts"`
		} `json:"data"`
	}
	if err := w.p.get("/api/v1/alerts", nil, &r); err != nil {
		return
	}
	now := time.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	seen := map[string]bool{}
	for _, a := range r.Data.Alerts {
		var kv []string
		for k, v := range a.Labels {
			kv = append(kv, k+"="+v)
		}
		sort.Strings(kv)
		key := strings.Join(kv, ",")
		seen[key] = true
		w.name[key] = a.Labels["alertname"]
		if w.cur[key] != a.State {
			from := w.cur[key]
			if from == "" {
				from = "inactive"
			}
			w.log = append(w.log, change{at: now, alert: a.Labels["alertname"], from: from, to: a.State, labelsKey: key})
			w.cur[key] = a.State
		}
	}
	for key, st := range w.cur {
		if !seen[key] && st != "inactive" {
			w.log = append(w.log, change{at: now, alert: w.name[key], from: st, to: "inactive", labelsKey: key})
			w.cur[key] = "inactive"
		}
	}
}

func (w *watcher) changes() []change {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.log)
}

// states lists every state alert reached.
func (w *watcher) states(alert string) []string {
	var out []string
	for _, c := range w.changes() {
		if c.alert == alert {
			out = append(out, c.to)
		}
	}
	return out
}

// last is alert's last state, "inactive" if it never changed.
func (w *watcher) last(alert string) string {
	st := "inactive"
	for _, c := range w.changes() {
		if c.alert == alert {
			st = c.to
		}
	}
	return st
}

func (w *watcher) first(alert, state string) (time.Time, bool) {
	for _, c := range w.changes() {
		if c.alert == alert && c.to == state {
			return c.at, true
		}
	}
	return time.Time{}, false
}

// --- helpers ------------------------------------------------------------------

func poll(ctx context.Context, timeout time.Duration, cond func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	var last error
	for {
		ok, err := cond()
		if ok {
			return nil
		}
		if err != nil {
			last = err
		}
		if time.Now().After(deadline) {
			if last != nil {
				return fmt.Errorf("not within %v: %w", timeout, last)
			}
			return fmt.Errorf("not within %v", timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func rel(root, p string) string {
	if r, err := filepath.Rel(root, p); err == nil {
		return r
	}
	return p
}

func fail(err error) int {
	if errors.Is(err, context.Canceled) {
		fmt.Println("\ninterrupted: stopped every process")
		return 130
	}
	fmt.Fprintln(os.Stderr, "demo-metrics:", err)
	return 1
}
