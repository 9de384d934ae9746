package controlplanefaults

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/leasehold/leasehold/test/testkit"
)

// TestGoneOnResumeAfterCompaction: a leader's and a follower's watches
// are cut and their resumptions held back while the leader renews; etcd
// is compacted past the versions they will resume from; the resumed
// watches get a real 410 Gone from kube-apiserver (an ERROR event, code
// 410, read on the wire). Each elector then watches from the current
// state without a GET, the leader keeps its term throughout, the
// follower never writes, and a release still reaches the follower on its
// new watch in less than L - P (so not by expiry).
func TestGoneOnResumeAfterCompaction(t *testing.T) {
	ns, tr, lg := newNamespace(t), testkit.NewTracker(), testkit.NewLogs(t, 4)
	ctx := context.Background()
	ld := startLeading(t, "leader", ns, "gone", std, tr, lg)
	fl := startElector(t, "follower", ns, "gone", std, tr, lg)
	watching(t, ld, fl)

	// 1. Cut both watches; hold their resumptions.
	resume := map[*elector]int64{}
	for _, e := range []*elector{ld, fl} {
		e.wire.HoldWatches()
		if n := e.wire.CutWatches(); n != 1 {
			t.Fatalf("%s: cut %d watches, want 1", e.id, n)
		}
	}
	cut := time.Now()
	for _, e := range []*elector{ld, fl} {
		testkit.Eventually(t, 10*time.Second, e.id+"'s resumed watch", func() bool { return len(e.wire.HeldRVs()) >= 1 })
		rv := e.wire.HeldRVs()[0]
		v, err := strconv.ParseInt(rv, 10, 64)
		if err != nil {
			t.Fatalf("%s resumed its watch from %q, want the resourceVersion it last saw", e.id, rv)
		}
		resume[e] = v
	}

	// 2. The leader renews twice meanwhile; then etcd is compacted to its
	// current revision, past both resume points.
	testkit.Eventually(t, 5*time.Second, "two renewals", func() bool { return ld.wire.Count("update", cut, testkit.IsOK) >= 2 })
	rev, err := cp.CompactEtcd(ctx)
	testkit.Must(t, err)
	for e, v := range resume {
		if v >= rev {
			t.Fatalf("%s resumes from %d, not older than the compaction at %d", e.id, v, rev)
		}
	}
	released := time.Now()
	for _, e := range []*elector{ld, fl} {
		e.wire.ReleaseWatches()
	}
	t.Logf("etcd compacted at revision %d; resumptions from leader %d, follower %d released", rev, resume[ld], resume[fl])

	// 3. Each got a real 410 for its resume point, and handled it: a new
	// watch from the current state, events on it, no GET.
	for _, e := range []*elector{ld, fl} {
		checkGone(t, e, strconv.FormatInt(resume[e], 10), released, lg)
	}

	// 4. The leader kept its term; the follower never wrote.
	if starts, stops := ld.counts(); starts != 1 || stops != 0 {
		t.Errorf("leader: %d terms started, %d stopped; want 1 and 0 (its term survives its watch's 410)", starts, stops)
	}
	n := ld.wire.Count("update", time.Now(), testkit.IsOK)
	testkit.Eventually(t, 4*std.P, "renewals after the 410", func() bool { return ld.wire.Count("update", time.Time{}, testkit.IsOK) > n })
	tr.NoStart(t, 0, "the leader held the Lease")
	if n := fl.wire.Count("update", time.Time{}, nil) + fl.wire.Count("create", time.Time{}, nil); n != 0 {
		t.Errorf("follower wrote the Lease %d times while the leader renewed", n)
	}

	// 5. A release reaches the follower on the watch it opened after the 410.
	handoff(t, ld, fl, tr, std)
	tr.Check(t)
}

// TestGoneAfterAPIServerRestart: kube-apiserver is killed under a leader
// and a follower; while it is down, etcd moves on (as another API server's
// writes would move it: watches may have resumed from etcd's newest
// revision, through a bookmark) and is compacted; the API server restarts on the
// same port. Both electors' watches resume from versions etcd no longer
// has and get a real 410 Gone; both recover, and the leader's term
// survives the outage (RenewDeadline 15s, longer than the restart).
func TestGoneAfterAPIServerRestart(t *testing.T) {
	tm := testkit.Timing{L: 20 * time.Second, D: 15 * time.Second, P: time.Second}
	ns, tr, lg := newNamespace(t), testkit.NewTracker(), testkit.NewLogs(t, 4)
	ctx := context.Background()
	ld := startLeading(t, "leader", ns, "restart", tm, tr, lg)
	fl := startElector(t, "follower", ns, "restart", tm, tr, lg)
	watching(t, ld, fl)
	api, err := cp.APIServer()
	testkit.Must(t, err)

	killed := time.Now()
	testkit.Must(t, api.Kill())
	// Two writes: a watch from version v starts at v+1, which etcd still
	// serves if it is the compaction revision itself.
	for i := range 2 {
		testkit.Must(t, etcdPut(ctx, "/leasehold-test/other-writer", strconv.Itoa(i)))
	}
	rev, err := cp.CompactEtcd(ctx)
	testkit.Must(t, err)
	testkit.Must(t, api.Start(ctx))
	up := time.Now()
	t.Logf("kube-apiserver down for %v; etcd compacted at revision %d meanwhile", up.Sub(killed).Round(time.Millisecond), rev)

	for _, e := range []*elector{ld, fl} {
		g := checkGone(t, e, "", killed, lg)
		if v, err := strconv.ParseInt(g.RV, 10, 64); err != nil || v >= rev {
			t.Errorf("%s: 410 for a watch from %q; want a version older than the compaction at %d", e.id, g.RV, rev)
		}
	}
	if starts, stops := ld.counts(); starts != 1 || stops != 0 {
		t.Errorf("leader: %d terms started, %d stopped; want 1 and 0 (its term outlives a %v outage with RenewDeadline %v)", starts, stops, up.Sub(killed).Round(time.Millisecond), tm.D)
	}
	testkit.Eventually(t, 4*tm.P, "a renewal after the restart", func() bool { return ld.wire.Count("update", up, testkit.IsOK) >= 1 })
	tr.NoStart(t, 0, "the leader held the Lease")
	if n := fl.wire.Count("update", time.Time{}, nil) + fl.wire.Count("create", time.Time{}, nil); n != 0 {
		t.Errorf("follower wrote the Lease %d times while the leader held it", n)
	}
	handoff(t, ld, fl, tr, tm)
	tr.Check(t)
}

// checkGone waits for e's wire to carry a real 410 Gone after since (for
// a watch from rv, if rv is set), then for e to watch from the current
// state (resourceVersion "") and receive events on that watch, without a
// GET. It returns the 410.
func checkGone(t *testing.T, e *elector, rv string, since time.Time, lg *testkit.Logs) testkit.Gone {
	t.Helper()
	var g testkit.Gone
	testkit.Eventually(t, 30*time.Second, e.id+" to get a 410 Gone from the server", func() bool {
		for _, x := range e.wire.Gones() {
			if !x.At.Before(since) && (rv == "" || x.RV == rv) {
				g = x
				return true
			}
		}
		return false
	})
	var fresh testkit.Call
	testkit.Eventually(t, 10*time.Second, e.id+" to watch from the current state after the 410", func() bool {
		for _, c := range e.wire.All() {
			if c.Verb == "watch" && c.RV == "" && c.OK() && !c.Sent.Before(g.At) {
				fresh = c
				return true
			}
		}
		return false
	})
	events := e.wire.Events()
	testkit.Eventually(t, 10*time.Second, e.id+" to receive events on its new watch", func() bool { return e.wire.Events() > events })
	if n := e.wire.Count("get", g.At, nil) + e.wire.Count("list", g.At, nil); n != 0 {
		t.Errorf("%s read the Lease %d times after the 410; want 0 (the watch from the current state re-reads)", e.id, n)
	}
	if len(lg.Matching(`"`+e.id+`"`, "410")) == 0 && len(lg.Matching(e.id, "re-reading through a watch")) == 0 {
		t.Errorf("%s logged nothing about the 410", e.id)
	}
	kind := "HTTP 410"
	if g.Event {
		kind = "ERROR event " + g.Reason + ": " + g.Message
	}
	t.Logf("%s: watch from resourceVersion %s answered 410 Gone by the server (%s); watch from the current state %v later",
		e.id, g.RV, kind, fresh.Sent.Sub(g.At).Round(time.Microsecond))
	return g
}

// handoff cancels the leader and checks that the follower takes over in
// less than L - P after the release was sent (so on its watch, not by
// expiry), without reading the Lease.
func handoff(t *testing.T, ld, fl *elector, tr *testkit.Tracker, tm testkit.Timing) {
	t.Helper()
	rel := time.Now()
	ld.Cancel()
	s := tr.NextStart(t, tm.L+5*time.Second)
	if s.ID != fl.id {
		t.Fatalf("%s started after the release, want %s", s.ID, fl.id)
	}
	if lat := s.At.Sub(rel); lat >= tm.L-tm.P {
		t.Errorf("follower took over %v after the release, want < L-P = %v: by expiry, not on its watch", lat, tm.L-tm.P)
	} else {
		t.Logf("follower took over %v after the leader's release", lat.Round(time.Microsecond))
	}
	if n := fl.wire.Count("get", rel, nil) + fl.wire.Count("list", rel, nil); n != 0 {
		t.Errorf("follower read the Lease %d times to take over; want 0: the release reaches it on its watch", n)
	}
	ld.stop(t)
	fl.stop(t)
}

// watching waits for the follower to see the leader lead, and for both to
// have a watch open.
func watching(t *testing.T, ld, fl *elector) {
	t.Helper()
	testkit.Eventually(t, 10*time.Second, "the follower to see the leader", func() bool { return fl.sees(ld.id) })
	for _, e := range []*elector{ld, fl} {
		testkit.Eventually(t, 10*time.Second, e.id+"'s watch", func() bool { return e.wire.Count("watch", time.Time{}, testkit.IsOK) >= 1 })
	}
}
