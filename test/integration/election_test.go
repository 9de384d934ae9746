package integration

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"

	"github.com/leasehold/leasehold"
	"github.com/leasehold/leasehold/test/testkit"
)

// Five candidates start at once against a Lease that does not exist: the
// real server lets exactly one Create through, the others learn the winner
// from it, and as each leader steps down the next one takes over, never two
// at a time.
func TestFiveCandidatesRaceForMissingLease(t *testing.T) {
	ns, name := newNamespace(t), "race"
	tr, logs := testkit.NewTracker(), testkit.NewLogs(t, 4)
	gate := make(chan struct{})
	byID := map[string]*candidate{}
	var cands []*candidate
	for i := range 5 {
		c := startCandidate(t, candidateOpts{
			id: fmt.Sprintf("race-%d", i), ns: ns, name: name, t: std,
			release: true, tr: tr, logs: logs, gate: gate,
		})
		byID[c.id] = c
		cands = append(cands, c)
	}
	close(gate)

	first := tr.NextStart(t, 10*time.Second)
	t.Logf("%s won the race", first.ID)
	// Exactly one won first: nobody else starts while it holds the lease.
	tr.NoStart(t, 3*std.P, first.ID+" holds the lease")

	// The real server let exactly one Create through; the losers' Creates
	// got 409 AlreadyExists (no one overwrote the winner).
	created, tried := 0, 0
	for _, c := range cands {
		tried += c.rec.Count("create", time.Time{}, nil)
		created += c.rec.Count("create", time.Time{}, func(c testkit.Call) bool { return c.OK() })
		if n := c.rec.Count("update", time.Time{}, func(cl testkit.Call) bool { return cl.OK() && cl.Holder != first.ID }); n > 0 {
			t.Errorf("%s wrote itself as holder %d times while %s held the lease", c.id, n, first.ID)
		}
	}
	if created != 1 {
		t.Errorf("%d Creates of the missing Lease succeeded, want exactly 1 (of %d tried)", created, tried)
	}
	t.Logf("%d candidates tried to create the Lease, %d succeeded", tried, created)
	if got := testkit.Holder(testkit.GetLease(t, admin, ns, name)); got != first.ID {
		t.Fatalf("Lease holder is %q, want the winner %q", got, first.ID)
	}
	// The others observe the winner through OnNewLeader, as their first
	// report.
	for _, c := range cands {
		c.waitSees(t, first.ID, 5*time.Second)
		if l := c.seenLeaders(); l[0] != first.ID {
			t.Errorf("%s: OnNewLeader reported %v, want %s first", c.id, l, first.ID)
		}
	}

	// Each leader steps down in turn (ReleaseOnCancel); one of the rest
	// takes over through the released Lease.
	led := map[string]bool{first.ID: true}
	cur := first
	for len(led) < len(cands) {
		cancelledAt := time.Now()
		byID[cur.ID].Cancel()
		next := tr.NextStart(t, 5*time.Second)
		if err := byID[cur.ID].Wait(t, 5*time.Second); err != nil {
			t.Fatalf("%s: Run after cancel: %v", cur.ID, err)
		}
		if led[next.ID] {
			t.Fatalf("%s led twice", next.ID)
		}
		led[next.ID] = true
		t.Logf("handoff %s -> %s: %v after cancel", cur.ID, next.ID, next.At.Sub(cancelledAt).Round(time.Millisecond))
		// Let it renew a few times, alone.
		tr.NoStart(t, 3*std.P, next.ID+" holds the lease")
		cur = next
	}
	testkit.Must(t, byID[cur.ID].stop(t))
	tr.Check(t)
	for _, c := range cands {
		if c.startCount() != 1 || c.stopCount() != 1 {
			t.Errorf("%s: %d terms started, %d stopped; want 1 and 1", c.id, c.startCount(), c.stopCount())
		}
	}
	if n := testkit.GetLease(t, admin, ns, name).Spec.LeaseTransitions; n == nil || *n != 4 {
		t.Errorf("leaseTransitions = %v, want 4 (5 terms)", n)
	}
}

// Another writer renews the Lease as "other" exactly when our candidate
// sends its takeover: the real server answers 409 and our candidate backs
// off and waits a full lease again; it never overwrites the other holder.
func TestConflictNeverOverwrites(t *testing.T) {
	ns, name := newNamespace(t), "conflict"
	tm := testkit.Timing{L: 2 * time.Second, D: 1500 * time.Millisecond, P: 250 * time.Millisecond}
	tr, logs := testkit.NewTracker(), testkit.NewLogs(t, 4)
	ctx := context.Background()
	if _, err := rawClaim(ctx, ns, name, "other", 2); err != nil {
		t.Fatal(err)
	}
	holders := watchHolders(t, ns, name)

	const races = 2
	var (
		mu        sync.Mutex
		raced     int
		lastOther time.Time
		otherErrs []error
	)
	rec := &testkit.Wire{}
	rec.SetBefore(func(c testkit.Call, _ *http.Request) *http.Response {
		if c.Verb != "update" || c.Holder != "ours" {
			return nil
		}
		mu.Lock()
		defer mu.Unlock()
		if raced == races {
			return nil
		}
		raced++
		// "other" renews just before our takeover reaches the server.
		lastOther = time.Now()
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if _, err := rawClaim(wctx, ns, name, "other", 2); err != nil {
			otherErrs = append(otherErrs, err)
		}
		return nil
	})
	ours := startCandidate(t, candidateOpts{id: "ours", ns: ns, name: name, t: tm, tr: tr, logs: logs, rec: rec})

	// Two takeovers lose (each after a full L of silence), the third wins.
	start := tr.NextStart(t, (races+1)*tm.L+10*time.Second)
	mu.Lock()
	nRaced, lastOtherAt, errs := raced, lastOther, otherErrs
	mu.Unlock()
	if len(errs) > 0 {
		t.Fatalf("the other writer failed: %v", errs)
	}
	if nRaced != races {
		t.Fatalf("raced %d takeovers, want %d", nRaced, races)
	}
	var statuses []int
	for _, c := range rec.All() {
		if c.Verb == "update" && c.Holder == "ours" {
			statuses = append(statuses, c.Status)
		}
		if c.Verb == "create" {
			t.Errorf("ours sent a Create for an existing Lease: %+v", c)
		}
	}
	if want := []int{http.StatusConflict, http.StatusConflict, http.StatusOK}; !slices.Equal(statuses[:min(3, len(statuses))], want) {
		t.Errorf("takeover updates answered %v, want %v first", statuses, want)
	}
	// The server's own history: "other" for every version until ours won.
	testkit.Eventually(t, 2*time.Second, "the admin watch to see ours", func() bool { return slices.Contains(holders.holders(), "ours") })
	h := holders.holders()
	firstOurs := slices.Index(h, "ours")
	for i, x := range h[:firstOurs] {
		if x != "other" {
			t.Errorf("version %d of the Lease held by %q before ours won: %v", i, x, h)
		}
	}
	if firstOurs < races+1 {
		t.Errorf("want the initial claim and %d renewals by other before ours, got %v", races, h)
	}
	// Ours waited a whole lease after the last renewal it lost to.
	if waited := start.At.Sub(lastOtherAt); waited < tm.L {
		t.Errorf("ours started %v after other's last renewal, want at least LeaseDuration %v", waited, tm.L)
	} else {
		t.Logf("ours took over %v after other's last renewal (LeaseDuration %v); takeovers answered %v", waited.Round(time.Millisecond), tm.L, statuses)
	}
	testkit.Must(t, ours.stop(t))
	tr.Check(t)
}

// A leader with ReleaseOnCancel releases with an update conditioned on its
// own last write, read from nowhere: no GET. Another writer takes the
// Lease after our last renewal and before the release: it lands just
// before the releasing client's first request that is not a renewal,
// whatever that is — a GET (or LIST) that a release conditioned on a fresh
// read would make, or the release itself. So a release built on a read
// would read the other writer's version and blank it; the right one gets
// 409 Conflict, once, and the other holder keeps the Lease.
func TestReleaseIsConditional(t *testing.T) {
	ns, name := newNamespace(t), "release"
	tr, logs := testkit.NewTracker(), testkit.NewLogs(t, 4)
	var (
		armed    atomic.Bool
		mu       sync.Mutex
		landedAt string // the verb of the request the other writer landed before
		thief    *coordinationv1.Lease
		thiefErr error
	)
	rec := &testkit.Wire{}
	rec.SetBefore(func(c testkit.Call, _ *http.Request) *http.Response {
		release := c.Verb == "update" && c.HasBody && c.Holder == ""
		read := c.Verb == "get" || c.Verb == "list"
		if !armed.Load() || (!release && !read) {
			return nil // before the cancel, or a renewal, or the watch
		}
		mu.Lock()
		defer mu.Unlock()
		if landedAt == "" {
			landedAt = c.Verb
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			thief, thiefErr = rawClaim(ctx, ns, name, "thief", 3)
		}
		return nil
	})
	ours := startCandidate(t, candidateOpts{id: "ours", ns: ns, name: name, t: std, release: true, tr: tr, logs: logs, rec: rec})
	tr.NextStart(t, 10*time.Second)
	renewed := func(c testkit.Call) bool { return c.OK() && c.Holder == "ours" }
	testkit.Eventually(t, 10*std.P, "two renewals", func() bool { return rec.Count("update", time.Time{}, renewed) >= 2 })

	cancelled := time.Now()
	armed.Store(true)
	if err := ours.stop(t); err != nil {
		t.Fatalf("Run after cancel: %v", err)
	}
	mu.Lock()
	verb, stolen, stealErr := landedAt, thief, thiefErr
	mu.Unlock()
	if stealErr != nil {
		t.Fatalf("the other writer failed: %v", stealErr)
	}
	if verb == "" {
		t.Fatalf("ours made no release and no read after its cancel; requests: %v", rec.Verbs(cancelled))
	}
	if n := rec.Count("get", cancelled, nil) + rec.Count("list", cancelled, nil); n != 0 {
		t.Errorf("ours read the Lease %d times to release it (the other writer landed before its %s); want no read: the release is conditioned on our own last write", n, verb)
	}
	var releases []testkit.Call
	for _, c := range rec.All() {
		if c.Verb == "update" && c.HasBody && c.Holder == "" {
			releases = append(releases, c)
		}
	}
	if len(releases) != 1 {
		t.Fatalf("%d release updates, want exactly 1 (a 409 is final): %+v", len(releases), releases)
	}
	if releases[0].Status != http.StatusConflict {
		t.Errorf("release answered %d (err %v), want 409 Conflict", releases[0].Status, releases[0].Err)
	}
	got := testkit.GetLease(t, admin, ns, name)
	if testkit.Holder(got) != "thief" || got.ResourceVersion != stolen.ResourceVersion {
		t.Errorf("after the release, Lease held by %q at version %s; want the other writer's %q at %s",
			testkit.Holder(got), got.ResourceVersion, "thief", stolen.ResourceVersion)
	}
	if len(logs.Matching("Did not release the lease")) == 0 {
		t.Errorf("no log line says the release was not done")
	}
	if n := ours.stopCount(); n != 1 {
		t.Errorf("OnStoppedLeading called %d times, want 1", n)
	}
	tr.Check(t)
}

// Two processes share one identity. The second sees the first renew under
// "its" identity, returns ErrIdentityConflict without ever leading, and the
// first keeps leading undisturbed.
func TestIdentityClash(t *testing.T) {
	ns, name := newNamespace(t), "clash"
	tr, logs := testkit.NewTracker(), testkit.NewLogs(t, 4)
	first := startCandidate(t, candidateOpts{id: "dup", ns: ns, name: name, t: std, release: true, tr: tr, logs: logs})
	tr.NextStart(t, 10*time.Second)
	firstWork := first.workCtx

	second := startCandidate(t, candidateOpts{id: "dup", ns: ns, name: name, t: std, release: true, tr: tr, logs: logs})
	started := time.Now()
	err := second.Wait(t, 3*std.L)
	if !errors.Is(err, leasehold.ErrIdentityConflict) {
		t.Fatalf("second process: Run returned %v, want an error wrapping ErrIdentityConflict", err)
	}
	t.Logf("second process detected the clash in %v: %v", time.Since(started).Round(time.Millisecond), err)
	if n := second.startCount(); n != 0 {
		t.Errorf("second process led %d times, want never", n)
	}
	if n := second.rec.Count("update", time.Time{}, nil) + second.rec.Count("create", time.Time{}, nil); n != 0 {
		t.Errorf("second process wrote the Lease %d times, want never", n)
	}

	// The first keeps leading: same term, still renewing.
	rv := testkit.GetLease(t, admin, ns, name).ResourceVersion
	tr.NoStart(t, 4*std.P, "the first process still leads")
	select {
	case <-first.Done():
		t.Fatalf("first process: Run returned %v", first.Err())
	default:
	}
	if !first.el.IsLeader() || firstWork.Err() != nil || first.startCount() != 1 {
		t.Errorf("first process: IsLeader=%v, work ctx err=%v, terms=%d; want leading in its first term",
			first.el.IsLeader(), firstWork.Err(), first.startCount())
	}
	if l := testkit.GetLease(t, admin, ns, name); testkit.Holder(l) != "dup" || l.ResourceVersion == rv {
		t.Errorf("Lease: holder %q version %s (was %s); want still renewed by dup", testkit.Holder(l), l.ResourceVersion, rv)
	}
	testkit.Must(t, first.stop(t))
	tr.Check(t)
}

// Followers watch; they do not poll. A release reaches them over the
// watch and one takes over within milliseconds.
func TestWatchHandoffLatency(t *testing.T) {
	ns, name := newNamespace(t), "handoff"
	tr, logs := testkit.NewTracker(), testkit.NewLogs(t, 4)
	leader := startCandidate(t, candidateOpts{id: "leader-0", ns: ns, name: name, t: std, release: true, tr: tr, logs: logs})
	tr.NextStart(t, 10*time.Second)
	// follower-1's client has the README's request timeout; follower-2's
	// has none (see the watch-reopen figures logged below).
	f1 := startCandidate(t, candidateOpts{id: "follower-1", ns: ns, name: name, t: std, release: true, tr: tr, logs: logs})
	f2 := startCandidate(t, candidateOpts{id: "follower-2", ns: ns, name: name, t: std, release: true, tr: tr, logs: logs, noTimeout: true})
	byID := map[string]*candidate{f1.id: f1, f2.id: f2}
	f1.waitSees(t, leader.id, 5*time.Second)
	f2.waitSees(t, leader.id, 5*time.Second)

	// Steady state: several retry periods in which followers make no GET
	// and no write.
	time.Sleep(std.P)
	steadyFrom := time.Now()
	steady := 6 * std.P
	tr.NoStart(t, steady, leader.id+" holds the lease")
	for _, f := range []*candidate{f1, f2} {
		v := f.rec.Verbs(steadyFrom)
		if v["get"] != 0 || v["update"] != 0 || v["create"] != 0 || v["list"] != 0 {
			t.Errorf("%s made requests other than its watch while following for %v: %v", f.id, steady, v)
		}
		t.Logf("%s, steady %v as follower: GET=%d, watch requests=%d", f.id, steady, v["get"], v["watch"])
	}
	if w := f2.rec.Count("watch", steadyFrom, nil); w != 0 {
		t.Errorf("follower-2 (no client timeout) re-opened its watch %d times while steady, want 0", w)
	}

	// Two handoffs: leader-0 -> a follower -> the other follower.
	cur := leader
	var latencies []time.Duration
	for round := 1; round <= 2; round++ {
		roundFrom := time.Now()
		cur.Cancel()
		next := tr.NextStart(t, 5*time.Second)
		if err := cur.Wait(t, 5*time.Second); err != nil {
			t.Fatalf("%s: Run after cancel: %v", cur.id, err)
		}
		var rel testkit.Call
		for _, c := range cur.rec.All() {
			if c.Verb == "update" && c.HasBody && c.Holder == "" {
				rel = c
			}
		}
		if !rel.OK() {
			t.Fatalf("%s: release %+v did not succeed", cur.id, rel)
		}
		lat := next.At.Sub(rel.Sent)
		latencies = append(latencies, lat)
		t.Logf("handoff %d: %s released (request took %v); %s started %v after the release was sent, %v after Run returned",
			round, cur.id, rel.Done.Sub(rel.Sent).Round(time.Microsecond), next.ID,
			lat.Round(time.Microsecond), next.At.Sub(cur.Ended()).Round(time.Microsecond))
		nc, ok := byID[next.ID]
		if !ok {
			t.Fatalf("%s started leading; want a follower", next.ID)
		}
		checkReleaseHandoff(t, fmt.Sprintf("handoff %d to %s", round, next.ID), lat, std, nc.rec, roundFrom)
		delete(byID, next.ID)
		for _, other := range byID {
			other.waitSees(t, next.ID, 2*time.Second)
		}
		cur = nc
		tr.NoStart(t, 2*std.P, cur.id+" holds the lease")
	}
	testkit.Must(t, cur.stop(t))
	tr.Check(t)
	t.Logf("watch handoff latencies (release sent -> OnStartedLeading): %v", latencies)
}

// A follower's watch is closed under it: it resumes from the last version
// it saw, without a GET, and keeps tracking. When the resumed watch answers
// 410 Gone it re-reads with a GET and watches again.
//
// Why the 410 is injected rather than produced by the server: every watch
// is served from kube-apiserver's watch cache, which keeps every event of
// the last 75s (eventFreshDuration), growing its buffer up to 102,400
// events, and answers 410 only for versions older than its oldest event or
// than the list it was built from at startup. Within this suite no Lease
// version is ever that old; even resourceVersion=1 is served (replayed),
// as checked against this server. A real 410 would need over 100k Lease
// writes within 75s, or a server started with
// --watch-cache-sizes=leases.coordination.k8s.io#0 and a short
// --etcd-compaction-interval, which would change what every other test in
// this package runs against. So the test answers one resumed watch with
// the exact ERROR event kube-apiserver sends in that case, and everything
// after it (the GET, the new watch, the handoff) runs on the real server.
func TestWatchResumeAfter410(t *testing.T) {
	ns, name := newNamespace(t), "resume"
	tr, logs := testkit.NewTracker(), testkit.NewLogs(t, 4)
	holders := watchHolders(t, ns, name)
	leader := startCandidate(t, candidateOpts{id: "leader", ns: ns, name: name, t: std, release: true, tr: tr, logs: logs})
	tr.NextStart(t, 10*time.Second)
	// No client timeout: the client would otherwise end the watch itself
	// every RequestTimeout, and only this test's cuts should.
	f := startCandidate(t, candidateOpts{id: "follower", ns: ns, name: name, t: std, release: true, tr: tr, logs: logs, noTimeout: true})
	f.waitSees(t, leader.id, 5*time.Second)
	testkit.Eventually(t, 5*time.Second, "the follower's watch", func() bool { return f.rec.Count("watch", time.Time{}, testkit.IsOK) >= 1 })

	// 1. The watch is cut: resumed from the last version, no GET.
	cut := time.Now()
	if n := f.rec.CutWatches(); n != 1 {
		t.Fatalf("cut %d watches, want 1", n)
	}
	testkit.Eventually(t, 5*time.Second, "the watch to be re-opened", func() bool { return f.rec.Count("watch", cut, testkit.IsOK) >= 1 })
	var resumed testkit.Call
	for _, c := range f.rec.All() {
		if c.Verb == "watch" && !c.Sent.Before(cut) {
			resumed = c
			break
		}
	}
	if resumed.RV == "" {
		t.Errorf("watch re-opened without a resourceVersion: %+v", resumed)
	} else if !slices.ContainsFunc(holders.snapshot(), func(v leaseVersion) bool { return v.rv == resumed.RV && v.holder == leader.id }) {
		t.Errorf("watch resumed from version %s, which is not a version of the Lease held by %s", resumed.RV, leader.id)
	}
	if n := f.rec.Count("get", cut, nil); n != 0 {
		t.Errorf("follower made %d GETs to resume its watch, want 0", n)
	}
	t.Logf("watch cut; re-opened %v later from resourceVersion %s", resumed.Sent.Sub(cut).Round(time.Microsecond), resumed.RV)
	// It keeps receiving the leader's renewals on the resumed watch.
	got := f.rec.WatchBytes()
	testkit.Eventually(t, 4*std.P, "renewals on the resumed watch", func() bool { return f.rec.WatchBytes() > got })

	// 2. The next resumed watch answers 410 Gone, as an ERROR event the way
	// kube-apiserver sends it: re-read through a watch without a
	// resourceVersion (its first event is the current state), no GET.
	var (
		goneMu sync.Mutex
		gone   testkit.Call
	)
	f.rec.SetBefore(func(c testkit.Call, req *http.Request) *http.Response {
		goneMu.Lock()
		defer goneMu.Unlock()
		if c.Verb != "watch" || !gone.Sent.IsZero() {
			return nil
		}
		gone = c
		gone.Sent = time.Now()
		return errorEventResponse(req, http.StatusGone, "Expired", fmt.Sprintf("too old resource version: %s (%s)", c.RV, c.RV+"0"))
	})
	cut = time.Now()
	if n := f.rec.CutWatches(); n != 1 {
		t.Fatalf("cut %d watches, want 1", n)
	}
	var rewatch testkit.Call
	testkit.Eventually(t, 10*time.Second, "a new watch from the current state after 410", func() bool {
		for _, c := range f.rec.All() {
			if !c.Sent.Before(cut) && c.Verb == "watch" && c.RV == "" && c.OK() {
				rewatch = c
				return true
			}
		}
		return false
	})
	goneMu.Lock()
	goneRV := gone.RV
	goneMu.Unlock()
	if goneRV == "" {
		t.Errorf("the watch answered with 410 had no resourceVersion")
	}
	if n := f.rec.Count("get", cut, nil); n != 0 {
		t.Errorf("follower made %d GETs after 410, want 0: the watch from the current state re-reads", n)
	}
	if len(logs.Matching(`"identity"="follower"`, "from the current state")) == 0 {
		t.Errorf("no log line about the 410")
	}
	t.Logf("after 410 on resourceVersion %s: new watch from the current state %v later",
		goneRV, rewatch.Sent.Sub(cut).Round(time.Microsecond))
	got = f.rec.WatchBytes()
	testkit.Eventually(t, 4*std.P, "renewals on the new watch", func() bool { return f.rec.WatchBytes() > got })

	// 3. Through all this the follower never took over from the live
	// leader, and it still hands over in milliseconds: its watch works.
	tr.NoStart(t, 2*std.P, "the leader is renewing")
	if n := f.rec.Count("update", time.Time{}, nil) + f.rec.Count("create", time.Time{}, nil); n != 0 {
		t.Errorf("follower wrote the Lease %d times while the leader renewed", n)
	}
	leader.Cancel()
	next := tr.NextStart(t, 5*time.Second)
	testkit.Must(t, leader.Wait(t, 5*time.Second))
	var rel testkit.Call
	for _, c := range leader.rec.All() {
		if c.Verb == "update" && c.HasBody && c.Holder == "" {
			rel = c
		}
	}
	if next.ID != f.id || !rel.OK() {
		t.Fatalf("after the release (%+v), %s started; want the follower", rel, next.ID)
	}
	lat := next.At.Sub(rel.Sent)
	t.Logf("follower took over %v after the release", lat.Round(time.Microsecond))
	checkReleaseHandoff(t, "follower after the 410", lat, std, f.rec, cut)
	testkit.Must(t, f.stop(t))
	tr.Check(t)
}
