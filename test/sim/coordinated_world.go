package sim

// Coordinated leader election (KEP-4355) in the elector world: in the
// plans whose Coordinated is set, every candidate is made with
// leasehold.NewCoordinated, registers a LeaseCandidate on the world's
// in-memory LeaseCandidate API (candStore: leaseholdtest serves Leases
// only), and the world runs an election controller (controller) that plays
// kube-apiserver's: it follows the Lease and the LeaseCandidates, and when
// the Lease is absent, released or expired by its own clock, it pings the
// candidates, waits for their answers, and writes the Lease to the best
// one that answered (the oldest emulation version, then binary version,
// then registration) as kube-apiserver does: holder set, acquireTime
// unset, leaseDurationSeconds 5, renewTime now by its clock, the strategy,
// no preferredHolder. On a Lease held by another than the best candidate
// it writes spec.preferredHolder, and the holder hands over.
//
// The controller is part of the API server: no fault of the plan touches
// its requests or its view, but its clock is its own (Plan.CtrlSkew), and
// the candidates' clocks are set apart from it by up to half a lease
// duration either way (Plan.Skew).

import (
	"cmp"
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	coordinationv1beta1 "k8s.io/api/coordination/v1beta1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/uuid"
	"k8s.io/apimachinery/pkg/util/version"
	"k8s.io/apimachinery/pkg/watch"
	coordinationv1beta1client "k8s.io/client-go/kubernetes/typed/coordination/v1beta1"
	"k8s.io/utils/ptr"

	"github.com/leasehold/leasehold"
	"github.com/leasehold/leasehold/leaseholdtest"
)

const (
	// ElectionWait is how long the election controller waits for the
	// candidates it pinged to answer before it elects among those that
	// did (kube-apiserver's controller: 5s).
	ElectionWait = 5 * time.Second
	// assignedSeconds is the leaseDurationSeconds of the controller's
	// assignment (kube-apiserver's: 5).
	assignedSeconds = 5
	// controllerClient names the controller's requests on the server: the
	// world's hook lets them through, as the controller runs inside
	// kube-apiserver.
	controllerClient = adminClient
	controllerWho    = "ctrl"
)

// coordinatedShare is the share of plans drawn coordinated: one in
// coordinatedOneIn.
const coordinatedOneIn = 4

// drawnCoordinated reports whether the plan of seed is coordinated when
// nothing forces it. It draws from a stream of its own, so that a plain
// plan is the same as before coordinated plans existed.
func drawnCoordinated(seed uint64) bool {
	return rand.New(rand.NewPCG(seed, 0xc00d1a7e)).IntN(coordinatedOneIn) == 0
}

// coordinate makes p a coordinated plan (on) or a plain one: the
// controller's clock, and the candidates' clocks redrawn around it, each
// set apart from the controller's by up to LeaseDuration/2 either way. A
// controller ahead of the last holder's clock assigns the Lease before
// that holder's claim has run out by the candidates' clocks (the library
// must wait it out); one behind assigns late. Further apart, a controller
// ahead would take the Lease from healthy leaders over and over: safety
// would still hold, liveness cannot.
func (p *Plan) coordinate(on bool) {
	p.Coordinated, p.CtrlSkew = on, 0
	if !on {
		return
	}
	rng := rand.New(rand.NewPCG(p.Seed, 0x5c3e11))
	L := p.Timings.LeaseDuration
	if rng.IntN(2) == 0 {
		p.CtrlSkew = (time.Duration(rng.Int64N(int64(8*L))) - 4*L).Truncate(time.Millisecond)
	}
	p.Skew = p.Skew[:0:0]
	for range p.Candidates {
		d := time.Duration(rng.Int64N(int64(L))) - L/2 // controller minus candidate
		p.Skew = append(p.Skew, (p.CtrlSkew - d).Truncate(time.Millisecond))
	}
	p.CtrlWait = []time.Duration{ElectionWait, ElectionWait, time.Second, 100 * time.Millisecond}[rng.IntN(4)]
	// The two findings below are fixed in the library (view.go, and
	// coordinated.go's awaitWithdrawal): every coordinated plan is
	// strict, and in one in two the controller also marks a better
	// candidate on an assignment not taken up yet.
	p.Strict = true
	p.CtrlPrefersAssigned = rng.IntN(2) == 0
}

// CoordinatedLeaderBound is LeaderBound for coordinated election: after
// the last disturbance, every candidate may act on the Lease by its own
// clock within LeaderBound (2 x LeaseDuration + RetryPeriod); the
// controller's clock may run up to LeaseDuration/2 behind the last
// holder's, so it sees that holder's claim run out that much later; its
// ping round may have to wait ElectionWait after the previous one, and
// then waits up to ElectionWait for the pings of candidates that crashed
// without withdrawing; the assignee takes the term up with one write.
func (t Timings) CoordinatedLeaderBound() time.Duration {
	return t.LeaderBound() + t.LeaseDuration/2 + 2*ElectionWait
}

// leaderBound is the no-leader bound of p's world.
func (p Plan) leaderBound() time.Duration {
	if p.Coordinated {
		return p.Timings.CoordinatedLeaderBound()
	}
	return p.Timings.LeaderBound()
}

// assignedConflictLocked reports whether c's Run, returning
// ErrIdentityConflict, met a version of the Lease that the election
// controller wrote naming c's identity: an open finding, not a violation
// unless the plan is Strict (every coordinated plan now is: fixed in
// view.go, which asks first whether the version is the controller's
// assignment). leasehold's observe() took a version naming
// this identity that it did not write, after one naming it (its own term,
// deleted by hand or run out, or the assignment itself rewritten), for
// another live process using its identity, before it asks whether it is
// the controller's assignment (acquireTime unset). Seen first in seed 3
// (go run ./cmd/sim -start 3 -seeds 1 -coordinated -strict): the leader's
// Lease deleted by hand, the controller re-creates it assigned to that
// same leader, whose Run returns ErrIdentityConflict.
func (w *world) assignedConflictLocked(c *inc) bool {
	at, ok := w.ctrlNamed[c.id]
	if !w.p.Coordinated || w.p.Strict || !ok || at.Before(c.began) {
		return false
	}
	w.res.ExcusedAssigned++
	w.hist.add(entry{kind: evRun, who: c.client, what: "identity conflict after the controller wrote the Lease naming this identity: an open finding of coordinated election, excused (-strict makes it a violation)"})
	return true
}

// hungWorkEndedLocked counts the return of a work that outlived its
// term past the safety margin (a hang-work fault) as a disturbance: its
// process campaigns again only after that work has returned (the
// contract: again() waits for the overdue work), so when it is the only
// candidate left, as when the others crashed, nobody can lead before
// then (make sim, seed 1167 once pauses were drawn: c1's hung work
// returned 20s after its cancellation, the other two had crashed). In a
// coordinated world the controller keeps assigning the Lease to such a
// process, too. Checks before the return still run: a world with other
// candidates must have led meanwhile.
func (w *world) hungWorkEndedLocked(wk *work) {
	if wk.hang == 0 || wk.cancelledAt.IsZero() || time.Since(wk.cancelledAt) <= w.t.Margin() {
		return
	}
	w.res.HungReturns++
	w.hist.add(entry{kind: evOp, who: "sim", what: fmt.Sprintf("a hung work returned %v after its cancellation: a disturbance (its process campaigns only now)", time.Since(wk.cancelledAt))})
	w.disturbLocked()
}

// runBound is how long Run may take to return after its ctx is
// cancelled: RunBound. A coordinated Elector first withdraws its
// LeaseCandidate (one request, up to RequestTimeout against a stalled API
// server), and its StepDownTimeout counts from there: Run may then return
// at RunBound to the nanosecond, at the very instant the check runs (seed
// 986 with -coordinated), so the check allows graceSlack more.
func (w *world) runBound() time.Duration {
	if w.p.Coordinated {
		return w.t.RunBound() + graceSlack
	}
	return w.t.RunBound()
}

// ctrlWroteLocked records a write of the controller that names holder.
func (w *world) ctrlWroteLocked(holder string) {
	if w.ctrlNamed == nil {
		w.ctrlNamed = map[string]time.Time{}
	}
	w.ctrlNamed[holder] = time.Now()
}

// NewPlanCoordinated is NewPlan with coordinated election forced on or
// off instead of drawn.
func NewPlanCoordinated(seed uint64, n int, duration time.Duration, on bool) Plan {
	return newPlan(seed, n, duration, ptr.To(on))
}

// candidateVersions are the (emulation, binary) versions an incarnation
// draws from: an upgrade in progress.
var candidateVersions = [][2]string{{"1.30.0", "1.30.2"}, {"1.30.0", "1.31.0"}, {"1.31.0", "1.31.0"}, {"1.31.1", "1.31.1"}}

// candidateConfig is the CandidateConfig of incarnation c.
func (w *world) candidateConfig(c *inc) leasehold.CandidateConfig {
	v := candidateVersions[int(w.unit(6, uint64(c.s.i), uint64(c.n))*float64(len(candidateVersions)))]
	return leasehold.CandidateConfig{Client: candGetter{c: c}, EmulationVersion: v[0], BinaryVersion: v[1]}
}

// candStore is the world's LeaseCandidate API: compare-and-swap writes,
// resourceVersions, watches by name that resume from a resourceVersion
// (410 Gone before the last compaction). The controller reads and pings
// it directly, as a controller inside the API server does.
type candStore struct {
	mu       sync.Mutex
	rv       int64
	compact  int64
	objs     map[string]*coordinationv1beta1.LeaseCandidate
	history  []candEvent
	watchers map[*candWatcher]struct{}
	// changed is signalled on every change, for the controller.
	changed chan struct{}
}

type candEvent struct {
	rv  int64
	typ watch.EventType
	obj *coordinationv1beta1.LeaseCandidate
}

var candGR = schema.GroupResource{Group: "coordination.k8s.io", Resource: "leasecandidates"}

func newCandStore() *candStore {
	return &candStore{objs: map[string]*coordinationv1beta1.LeaseCandidate{}, watchers: map[*candWatcher]struct{}{},
		changed: make(chan struct{}, 1)}
}

// storeLocked records obj (nil: deleted) under name and tells watchers.
func (s *candStore) storeLocked(name string, obj *coordinationv1beta1.LeaseCandidate, typ watch.EventType) *coordinationv1beta1.LeaseCandidate {
	s.rv++
	var ev candEvent
	if obj == nil {
		old := s.objs[name].DeepCopy()
		old.ResourceVersion = strconv.FormatInt(s.rv, 10)
		delete(s.objs, name)
		ev = candEvent{rv: s.rv, typ: watch.Deleted, obj: old}
	} else {
		obj = obj.DeepCopy()
		obj.ResourceVersion = strconv.FormatInt(s.rv, 10)
		s.objs[name] = obj
		ev = candEvent{rv: s.rv, typ: typ, obj: obj}
	}
	s.history = append(s.history, ev)
	if len(s.history) > 1000 {
		s.history = s.history[len(s.history)-500:]
		s.compact = max(s.compact, s.history[0].rv-1)
	}
	for cw := range s.watchers {
		cw.sendLocked(ev)
	}
	select {
	case s.changed <- struct{}{}:
	default:
	}
	return ev.obj.DeepCopy()
}

// list returns a copy of every LeaseCandidate, by name.
func (s *candStore) list() []*coordinationv1beta1.LeaseCandidate {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*coordinationv1beta1.LeaseCandidate, 0, len(s.objs))
	for _, o := range s.objs {
		out = append(out, o.DeepCopy())
	}
	slices.SortFunc(out, func(a, b *coordinationv1beta1.LeaseCandidate) int { return cmp.Compare(a.Name, b.Name) })
	return out
}

// ping sets the pingTime of candidate name, if it still has resourceVersion
// rv, and returns the new resourceVersion ("" if it changed meanwhile).
func (s *candStore) ping(name, rv string, at time.Time) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.objs[name]
	if cur == nil || cur.ResourceVersion != rv {
		return ""
	}
	cur = cur.DeepCopy()
	cur.Spec.PingTime = &metav1.MicroTime{Time: at}
	return s.storeLocked(name, cur, watch.Modified).ResourceVersion
}

// closeWatches ends every open watch; with gone, resumptions get 410.
func (s *candStore) closeWatches(gone bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for cw := range s.watchers {
		cw.closeLocked()
	}
	if gone {
		s.compact = s.rv
	}
}

// forget forgets the watch history: resumptions get 410.
func (s *candStore) forget() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.compact = s.rv
}

// candWatcher is one open watch of the store.
type candWatcher struct {
	s    *candStore
	name string
	ch   chan watch.Event
	done chan struct{}
	once sync.Once
}

func (cw *candWatcher) ResultChan() <-chan watch.Event { return cw.ch }

func (cw *candWatcher) Stop() {
	cw.s.mu.Lock()
	defer cw.s.mu.Unlock()
	cw.closeLocked()
}

func (cw *candWatcher) closeLocked() {
	cw.once.Do(func() {
		delete(cw.s.watchers, cw)
		close(cw.done)
		close(cw.ch)
	})
}

func (cw *candWatcher) sendLocked(ev candEvent) {
	select {
	case <-cw.done:
		return
	default:
	}
	if cw.name != "" && ev.obj.Name != cw.name {
		return
	}
	select {
	case cw.ch <- watch.Event{Type: ev.typ, Object: ev.obj.DeepCopy()}:
	default:
		cw.closeLocked() // too slow: dropped, as the API server does
	}
}

// candGetter is an incarnation's LeaseCandidate client: its requests go
// through the world's hook (counted in its budget, under the same faults
// as its Lease requests), fail once its process is dead, and its watches
// are forwarded as its Lease watches are (late, held, cut).
type candGetter struct{ c *inc }

func (g candGetter) LeaseCandidates(string) coordinationv1beta1client.LeaseCandidateInterface {
	return &candClient{c: g.c}
}

// candClient implements the verbs the candidacy uses; the others panic
// (the embedded interface is nil).
type candClient struct {
	coordinationv1beta1client.LeaseCandidateInterface
	c *inc
}

func (k *candClient) serve(ctx context.Context, verb, name string) error {
	c, w := k.c, k.c.w
	if c.dead.Load() {
		return errConnRefused
	}
	c.waitRunning() // a paused process sends nothing
	return w.hook(ctx, leaseholdtest.Request{Client: c.client, Verb: verb, Namespace: namespace, Name: name})
}

func (k *candClient) record(what string, got *coordinationv1beta1.LeaseCandidate, err error) {
	e := entry{kind: evRequest, who: k.c.client + "/lc", what: what, err: err}
	if got != nil {
		e.rv = got.ResourceVersion
		if got.Spec.RenewTime != nil {
			e.holder = "renew " + got.Spec.RenewTime.Format("15:04:05.000")
		}
	}
	k.c.w.hist.add(e)
}

func (k *candClient) Create(ctx context.Context, obj *coordinationv1beta1.LeaseCandidate, _ metav1.CreateOptions) (*coordinationv1beta1.LeaseCandidate, error) {
	got, err := k.create(ctx, obj)
	k.record("lc create", got, err)
	k.c.waitRunning() // nor reads an answer
	return got, err
}

func (k *candClient) create(ctx context.Context, obj *coordinationv1beta1.LeaseCandidate) (*coordinationv1beta1.LeaseCandidate, error) {
	if err := k.serve(ctx, "create", obj.Name); err != nil {
		return nil, err
	}
	s := k.c.w.cands
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.objs[obj.Name]; ok {
		return nil, apierrors.NewAlreadyExists(candGR, obj.Name)
	}
	obj = obj.DeepCopy()
	obj.Namespace, obj.UID = namespace, uuid.NewUUID()
	obj.CreationTimestamp = metav1.NewTime(time.Now().Add(k.c.w.p.CtrlSkew)) // the API server's clock
	return s.storeLocked(obj.Name, obj, watch.Added), nil
}

func (k *candClient) Get(ctx context.Context, name string, _ metav1.GetOptions) (*coordinationv1beta1.LeaseCandidate, error) {
	defer k.c.waitRunning()
	if err := k.serve(ctx, "get", name); err != nil {
		return nil, err
	}
	s := k.c.w.cands
	s.mu.Lock()
	defer s.mu.Unlock()
	if o := s.objs[name]; o != nil {
		return o.DeepCopy(), nil
	}
	return nil, apierrors.NewNotFound(candGR, name)
}

func (k *candClient) Update(ctx context.Context, obj *coordinationv1beta1.LeaseCandidate, _ metav1.UpdateOptions) (*coordinationv1beta1.LeaseCandidate, error) {
	got, err := k.update(ctx, obj)
	k.record("lc update from rv="+obj.ResourceVersion, got, err)
	k.c.waitRunning()
	return got, err
}

func (k *candClient) update(ctx context.Context, obj *coordinationv1beta1.LeaseCandidate) (*coordinationv1beta1.LeaseCandidate, error) {
	if err := k.serve(ctx, "update", obj.Name); err != nil {
		return nil, err
	}
	s := k.c.w.cands
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.objs[obj.Name]
	switch {
	case cur == nil:
		return nil, apierrors.NewNotFound(candGR, obj.Name)
	case obj.ResourceVersion != cur.ResourceVersion:
		return nil, apierrors.NewConflict(candGR, obj.Name, fmt.Errorf("the object has been modified"))
	}
	obj = obj.DeepCopy()
	obj.UID, obj.CreationTimestamp = cur.UID, cur.CreationTimestamp
	return s.storeLocked(obj.Name, obj, watch.Modified), nil
}

func (k *candClient) Delete(ctx context.Context, name string, opts metav1.DeleteOptions) error {
	err := k.delete(ctx, name, opts)
	k.record("lc delete", nil, err)
	k.c.waitRunning()
	return err
}

func (k *candClient) delete(ctx context.Context, name string, opts metav1.DeleteOptions) error {
	if err := k.serve(ctx, "delete", name); err != nil {
		return err
	}
	s := k.c.w.cands
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.objs[name]
	switch {
	case cur == nil:
		return apierrors.NewNotFound(candGR, name)
	case opts.Preconditions != nil && opts.Preconditions.UID != nil && *opts.Preconditions.UID != cur.UID:
		return apierrors.NewConflict(candGR, name, fmt.Errorf("precondition failed: UID in precondition: %v, UID in object meta: %v", *opts.Preconditions.UID, cur.UID))
	}
	s.storeLocked(name, nil, watch.Deleted)
	return nil
}

func (k *candClient) Watch(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
	c, w := k.c, k.c.w
	if err := k.serve(ctx, "watch", ""); err != nil {
		k.record("lc watch from rv="+opts.ResourceVersion, nil, err)
		return nil, err
	}
	name := ""
	if opts.FieldSelector != "" {
		sel, err := fields.ParseSelector(opts.FieldSelector)
		if err != nil {
			return nil, apierrors.NewBadRequest(err.Error())
		}
		name, _ = sel.RequiresExactMatch("metadata.name")
	}
	s := w.cands
	s.mu.Lock()
	var replay []candEvent
	switch rv := opts.ResourceVersion; rv {
	case "", "0":
		for _, o := range s.objs {
			replay = append(replay, candEvent{rv: s.rv, typ: watch.Added, obj: o})
		}
	default:
		from, err := strconv.ParseInt(rv, 10, 64)
		if err != nil {
			s.mu.Unlock()
			return nil, apierrors.NewBadRequest("invalid resourceVersion " + rv)
		}
		if from <= s.compact {
			s.mu.Unlock()
			err := apierrors.NewResourceExpired("too old resource version: " + rv)
			k.record("lc watch from rv="+rv, nil, err)
			return nil, err
		}
		for _, ev := range s.history {
			if ev.rv > from {
				replay = append(replay, ev)
			}
		}
	}
	cw := &candWatcher{s: s, name: name, ch: make(chan watch.Event, len(replay)+100), done: make(chan struct{})}
	for _, ev := range replay {
		cw.sendLocked(ev)
	}
	s.watchers[cw] = struct{}{}
	s.mu.Unlock()
	go func() {
		select {
		case <-ctx.Done():
			cw.Stop()
		case <-cw.done:
		}
	}()
	k.record("lc watch from rv="+opts.ResourceVersion, nil, nil)
	// Forwarded as a Lease watch is: lag, partitions, cuts, and the
	// process's death end or hold it.
	f := &fwdWatch{c: c, inner: cw, out: make(chan watch.Event), stop: make(chan struct{})}
	w.mu.Lock()
	if c.dead.Load() {
		w.mu.Unlock()
		cw.Stop()
		return nil, errConnRefused
	}
	c.watches[f] = struct{}{}
	if w.watchDroppedLocked(c.s.i) {
		f.Stop()
	}
	w.mu.Unlock()
	go f.run()
	c.waitRunning()
	return f, nil
}

// controller is the election controller of kube-apiserver, as the world
// plays it. Its goroutine owns its fields.
type controller struct {
	w    *world
	skew time.Duration
	stop chan struct{}
	done chan struct{}
	// pingAt is the controller-clock time of the ping round in progress
	// (zero if none), pinged the resourceVersion of each candidate's ping.
	pingAt time.Time
	pinged map[string]string
	// lastRound is when the last ping round started: a new one starts
	// ElectionWait after it at the earliest.
	lastRound time.Time
	// silent are the candidates that did not answer a ping, with the
	// resourceVersion they had then: they are not elected until they
	// write again.
	silent map[string]string
}

func (w *world) startController() {
	k := &controller{w: w, skew: w.p.CtrlSkew, stop: make(chan struct{}), done: make(chan struct{}),
		silent: map[string]string{}}
	w.ctrl = k
	go k.run()
}

// stopController ends the controller and waits for it.
func (w *world) stopController() {
	if k := w.ctrl; k != nil {
		w.ctrl = nil
		close(k.stop)
		<-k.done
	}
}

func (k *controller) now() time.Time { return time.Now().Add(k.skew) }

func (k *controller) run() {
	defer close(k.done)
	leases := k.w.srv.Client(controllerClient).Leases(namespace)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var events <-chan watch.Event
	var lw watch.Interface
	defer func() {
		if lw != nil {
			lw.Stop()
		}
	}()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		if events == nil {
			// Reopened at once: the controller reads the API server's
			// own cache, no request is refused.
			if w, err := leases.Watch(ctx, metav1.ListOptions{FieldSelector: "metadata.name=" + leaseName}); err == nil {
				lw, events = w, w.ResultChan()
			}
		}
		select {
		case <-k.stop:
			return
		case _, ok := <-events:
			if !ok {
				events = nil
				lw = nil
				continue
			}
		case <-k.w.cands.changed:
		case <-timer.C:
		}
		next := k.reconcile(ctx, leases)
		timer.Stop()
		select {
		case <-timer.C:
		default:
		}
		if !next.IsZero() {
			timer.Reset(max(0, next.Sub(k.now())))
		}
	}
}

// expired reports whether lease's claim has run out by the controller's
// clock, and when it does.
func (k *controller) expired(lease *coordinationv1.Lease, now time.Time) (bool, time.Time) {
	if lease.Spec.RenewTime == nil {
		return true, now
	}
	d := time.Duration(ptr.Deref(lease.Spec.LeaseDurationSeconds, 0)) * time.Second
	end := lease.Spec.RenewTime.Add(d)
	return !now.Before(end), end
}

// better orders candidates as the OldestEmulationVersion strategy does:
// the oldest emulation version, then the oldest binary version, then the
// oldest registration (then the name, for a total order).
func better(a, b *coordinationv1beta1.LeaseCandidate) int {
	cmpVer := func(x, y string) int {
		vx, ex := version.ParseSemantic(x)
		vy, ey := version.ParseSemantic(y)
		if ex != nil || ey != nil {
			return cmp.Compare(x, y)
		}
		return compareVersions(vx, vy)
	}
	if c := cmpVer(a.Spec.EmulationVersion, b.Spec.EmulationVersion); c != 0 {
		return c
	}
	if c := cmpVer(a.Spec.BinaryVersion, b.Spec.BinaryVersion); c != 0 {
		return c
	}
	if c := a.CreationTimestamp.Time.Compare(b.CreationTimestamp.Time); c != 0 {
		return c
	}
	return cmp.Compare(a.Name, b.Name)
}

func compareVersions(a, b *version.Version) int {
	switch {
	case a.LessThan(b):
		return -1
	case b.LessThan(a):
		return 1
	}
	return 0
}

// reconcile looks at the Lease and the candidates and acts; it returns
// when (controller clock) to look again, zero for at the next change.
func (k *controller) reconcile(ctx context.Context, leases interface {
	Create(context.Context, *coordinationv1.Lease, metav1.CreateOptions) (*coordinationv1.Lease, error)
	Update(context.Context, *coordinationv1.Lease, metav1.UpdateOptions) (*coordinationv1.Lease, error)
}) time.Time {
	w := k.w
	now := k.now()
	lease := w.srv.Lease(namespace, leaseName)
	var cands []*coordinationv1beta1.LeaseCandidate
	for _, lc := range w.cands.list() {
		if lc.Spec.LeaseName == leaseName {
			cands = append(cands, lc)
		}
		if rv, ok := k.silent[lc.Name]; ok && rv != lc.ResourceVersion {
			delete(k.silent, lc.Name) // it wrote again
		}
	}
	for name := range k.silent {
		if !slices.ContainsFunc(cands, func(lc *coordinationv1beta1.LeaseCandidate) bool { return lc.Name == name }) {
			delete(k.silent, name)
		}
	}
	if len(cands) == 0 {
		k.pingAt = time.Time{}
		return time.Time{}
	}
	holder := holderOf(lease)
	if lease != nil && holder != "" {
		if exp, end := k.expired(lease, now); !exp {
			k.pingAt = time.Time{}
			// Held: prefer the best live candidate, if it is not the
			// holder.
			live := slices.DeleteFunc(slices.Clone(cands), func(lc *coordinationv1beta1.LeaseCandidate) bool {
				_, ok := k.silent[lc.Name]
				return ok
			})
			if lease.Spec.AcquireTime == nil && !w.p.CtrlPrefersAssigned {
				// An assignment not taken up yet: left alone. Finding:
				// leasehold's assignee reads a second version naming it
				// that it did not write (this preferredHolder) as
				// another process using its identity, and Run returns
				// ErrIdentityConflict (e.g. go run ./cmd/sim -start 2
				// -seeds 1 -coordinated -prefer-assigned).
				live = nil
			}
			if len(live) > 0 {
				best := slices.MinFunc(live, better)
				if best.Name != holder && ptr.Deref(lease.Spec.PreferredHolder, "") != best.Name {
					l := lease.DeepCopy()
					l.Spec.PreferredHolder = ptr.To(best.Name)
					l.Spec.Strategy = ptr.To(coordinationv1.OldestEmulationVersion)
					got, err := leases.Update(ctx, l, metav1.UpdateOptions{})
					w.recordRequest(controllerWho, "update preferredHolder="+quote(best.Name)+" from rv="+l.ResourceVersion, got, err)
					if err != nil {
						return now // conflict: look again
					}
					// The holder is asked to hand over: a disturbance,
					// as an operator's preferred-holder annotation is.
					w.mu.Lock()
					w.ctrlWroteLocked(holder)
					for wk := range w.works {
						wk.mayStepDown = true
					}
					w.disturbLocked()
					w.mu.Unlock()
				}
			}
			return end
		}
	}
	// Absent, released or expired by this clock: an election.
	if k.pingAt.IsZero() {
		if next := k.lastRound.Add(ElectionWait); !k.lastRound.IsZero() && now.Before(next) {
			return next // at most one round per ElectionWait
		}
		k.pingAt, k.pinged = now, map[string]string{}
		for _, lc := range cands {
			if lc.Spec.RenewTime != nil && !lc.Spec.RenewTime.Time.Before(now) {
				// Renewed at this very instant (by its clock): no need
				// to ask. (A ping at the instant of a renewal would not
				// be one: pingTime must be after renewTime.)
				k.pinged[lc.Name] = ""
			} else if rv := w.cands.ping(lc.Name, lc.ResourceVersion, now); rv != "" {
				k.pinged[lc.Name] = rv
			}
		}
		w.hist.add(entry{kind: evRequest, who: controllerWho, what: fmt.Sprintf("ping %d candidates (lease holder %q)", len(k.pinged), holder)})
		return now.Add(cmp.Or(w.p.CtrlWait, ElectionWait))
	}
	var answered []*coordinationv1beta1.LeaseCandidate
	pending := false
	for _, lc := range cands {
		rv, ok := k.pinged[lc.Name]
		switch {
		case !ok:
			// Registered after the ping: pinged in the next round.
		case rv == "",
			rv != lc.ResourceVersion && lc.Spec.RenewTime != nil && lc.Spec.PingTime != nil && !lc.Spec.RenewTime.Before(lc.Spec.PingTime):
			answered = append(answered, lc)
		default:
			pending = true
		}
	}
	wait := cmp.Or(w.p.CtrlWait, ElectionWait)
	if pending && now.Before(k.pingAt.Add(wait)) {
		return k.pingAt.Add(wait)
	}
	for _, lc := range cands {
		if rv, ok := k.pinged[lc.Name]; ok && !slices.Contains(answered, lc) {
			k.silent[lc.Name] = rv
		}
	}
	k.lastRound, k.pingAt = k.pingAt, time.Time{}
	if len(answered) == 0 {
		return now.Add(ElectionWait) // a new round then
	}
	best := slices.MinFunc(answered, better)
	if lease != nil && holder == best.Name && lease.Spec.AcquireTime == nil {
		// Already assigned to it, not taken up yet (it may be waiting
		// out the previous holder's claim): nothing to write.
		return now.Add(ElectionWait)
	}
	stamp := metav1.NewMicroTime(now)
	var got *coordinationv1.Lease
	var err error
	if lease == nil {
		l := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: leaseName},
			Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To(best.Name), LeaseDurationSeconds: ptr.To[int32](assignedSeconds),
				RenewTime: &stamp, Strategy: ptr.To(coordinationv1.OldestEmulationVersion)}}
		got, err = leases.Create(ctx, l, metav1.CreateOptions{})
		w.recordRequest(controllerWho, "create (assign) holder="+quote(best.Name), got, err)
	} else {
		l := lease.DeepCopy()
		l.Spec.HolderIdentity = ptr.To(best.Name)
		l.Spec.AcquireTime = nil
		l.Spec.RenewTime = &stamp
		l.Spec.LeaseDurationSeconds = ptr.To[int32](assignedSeconds)
		l.Spec.Strategy = ptr.To(coordinationv1.OldestEmulationVersion)
		l.Spec.PreferredHolder = nil
		got, err = leases.Update(ctx, l, metav1.UpdateOptions{})
		w.recordRequest(controllerWho, "update (assign) holder="+quote(best.Name)+" from rv="+l.ResourceVersion, got, err)
	}
	if err == nil {
		w.mu.Lock()
		w.res.Assignments++
		w.ctrlWroteLocked(best.Name)
		w.mu.Unlock()
	}
	return now // look again: held now, or changed under the write
}
