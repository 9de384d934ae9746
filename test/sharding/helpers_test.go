package sharding

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"

	"github.com/leasehold/leasehold"
	"github.com/leasehold/leasehold/shard"
	"github.com/leasehold/leasehold/test/testkit"
)

// fast is the timing of the crash tests.
var fast = testkit.Fast

func newNamespace(t *testing.T) string { return testkit.Namespace(t, admin, "sh") }

// netSwitch is a client's network: it counts the client's requests by
// verb, and can be cut (every request fails, open watches end) to play a
// crashed or partitioned process.
type netSwitch struct {
	cut     atomic.Bool
	mu      sync.Mutex
	counts  map[string]int
	bodies  []io.Closer
	counted bool
}

func newNetSwitch() *netSwitch { return &netSwitch{counts: map[string]int{}} }

func (n *netSwitch) wrap(cfg *rest.Config) *rest.Config {
	cfg = rest.CopyConfig(cfg)
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper { return &switchedTransport{n: n, next: rt} })
	return cfg
}

// setCut cuts (true) or heals (false) the network.
func (n *netSwitch) setCut(on bool) {
	n.cut.Store(on)
	if !on {
		return
	}
	n.mu.Lock()
	bodies := n.bodies
	n.bodies = nil
	n.mu.Unlock()
	for _, b := range bodies {
		_ = b.Close()
	}
}

// snapshot returns the request counts by verb so far.
func (n *netSwitch) snapshot() map[string]int {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := map[string]int{}
	for k, v := range n.counts {
		out[k] = v
	}
	return out
}

type switchedTransport struct {
	n    *netSwitch
	next http.RoundTripper
}

func (t *switchedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	verb := verbOf(req)
	t.n.mu.Lock()
	t.n.counts[verb]++
	t.n.mu.Unlock()
	if t.n.cut.Load() {
		return nil, errors.New("test: network cut")
	}
	resp, err := t.next.RoundTrip(req)
	if err == nil && verb == "watch" {
		t.n.mu.Lock()
		t.n.bodies = append(t.n.bodies, resp.Body)
		t.n.mu.Unlock()
	}
	return resp, err
}

func (t *switchedTransport) WrappedRoundTripper() http.RoundTripper { return t.next }

// verbOf names a request's verb as the API server's authorizer does.
func verbOf(req *http.Request) string {
	q := req.URL.Query()
	parts := strings.Split(strings.Trim(req.URL.Path, "/"), "/")
	named := len(parts) >= 2 && parts[len(parts)-2] == "leases"
	switch req.Method {
	case http.MethodGet:
		switch {
		case q.Get("watch") == "true" || q.Get("watch") == "1":
			return "watch"
		case named:
			return "get"
		default:
			return "list"
		}
	case http.MethodPost:
		return "create"
	case http.MethodPut:
		return "update"
	case http.MethodDelete:
		return "delete"
	}
	return strings.ToLower(req.Method)
}

// tracker records every run of every shard, across members, with real
// timestamps, and the overlaps: a shard started while another member's
// run of it had not returned.
type tracker struct {
	mu       sync.Mutex
	active   map[int]string // shard -> member running it
	overlaps []string
	runs     []run
}

type run struct {
	member         string
	shard          int
	start, return_ time.Time // zero return_: still running
}

func newTracker() *tracker { return &tracker{active: map[int]string{}} }

func (tr *tracker) started(id string, s int) {
	now := time.Now()
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if o, ok := tr.active[s]; ok {
		tr.overlaps = append(tr.overlaps, fmt.Sprintf("%s shard %d started by %s while %s ran it", now.Format("15:04:05.000"), s, id, o))
	}
	tr.active[s] = id
	tr.runs = append(tr.runs, run{member: id, shard: s, start: now})
}

func (tr *tracker) returned(id string, s int) {
	now := time.Now()
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if tr.active[s] == id {
		delete(tr.active, s)
	}
	for i := len(tr.runs) - 1; i >= 0; i-- {
		if r := &tr.runs[i]; r.member == id && r.shard == s && r.return_.IsZero() {
			r.return_ = now
			break
		}
	}
}

func (tr *tracker) check(t *testing.T) {
	t.Helper()
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if len(tr.overlaps) > 0 {
		t.Errorf("a shard ran in two members at once: %v", tr.overlaps)
	}
}

// owners returns, per member, the shards it runs now.
func (tr *tracker) owners() map[string][]int {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	out := map[string][]int{}
	for s, id := range tr.active {
		out[id] = append(out[id], s)
	}
	for _, v := range out {
		sort.Ints(v)
	}
	return out
}

func (tr *tracker) allRuns() []run {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return slices.Clone(tr.runs)
}

// member is one shard.Member running in a goroutine.
type member struct {
	id  string
	m   *shard.Member
	net *netSwitch
	*testkit.Background
}

type memberOpts struct {
	id, ns, group string
	shards        int
	t             testkit.Timing
	release       bool
	tr            *tracker
	logs          *testkit.Logs
	// work, if set, runs as the shard's work instead of waiting for ctx.
	work func(ctx context.Context, shard int)
}

func startMember(t *testing.T, o memberOpts) *member {
	t.Helper()
	mb := &member{id: o.id, net: newNetSwitch()}
	cs := kubernetes.NewForConfigOrDie(mb.net.wrap(leasehold.WithRequestTimeout(cp.Config(), o.t.D)))
	m, err := shard.New(shard.Config{
		Namespace: o.ns, Group: o.group, Identity: o.id, Client: cs.CoordinationV1(),
		Shards: o.shards, LeaseDuration: o.t.L, RenewDeadline: o.t.D, RetryPeriod: o.t.P,
		ReleaseOnCancel: o.release,
		OnShardStarted: func(ctx context.Context, s int) {
			if o.tr != nil {
				o.tr.started(o.id, s)
				defer o.tr.returned(o.id, s)
			}
			if o.work != nil {
				o.work(ctx, s)
				return
			}
			<-ctx.Done()
		},
	})
	if err != nil {
		t.Fatalf("shard.New(%s): %v", o.id, err)
	}
	mb.m = m
	log := logr.Discard()
	if o.logs != nil {
		log = o.logs.Logger(o.id)
	}
	mb.Background = testkit.Go(t, klog.NewContext(context.Background(), log), o.id, 30*time.Second, m.Run)
	// Cleanups run last first: the network heals before Run is stopped.
	t.Cleanup(func() { mb.net.setCut(false) })
	return mb
}

func (mb *member) stop(t *testing.T) error {
	t.Helper()
	return mb.Stop(t, 30*time.Second)
}

// poll polls every 5ms: its Eventually times a rebalance to 5ms.
var poll = testkit.Poller{Every: 5 * time.Millisecond}

// balancedOver: every shard runs in exactly one of ids (per the tracker),
// and their counts differ by at most one.
func balancedOver(tr *tracker, shards int, ids ...string) bool {
	return balancedOwners(tr.owners(), shards, ids...)
}

func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(p*float64(len(s))+0.999999) - 1
	return s[max(0, min(i, len(s)-1))]
}
