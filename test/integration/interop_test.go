package integration

import (
	"context"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/klog/v2"

	"github.com/leasehold/leasehold"
	"github.com/leasehold/leasehold/test/testkit"
)

// clientGoCandidate is a k8s.io/client-go/tools/leaderelection elector on
// a resourcelock.LeaseLock, running in a goroutine.
type clientGoCandidate struct {
	id  string
	rec *testkit.Wire
	*testkit.Background

	mu      sync.Mutex
	leaders []string
}

func startClientGo(t *testing.T, id, ns, name string, tm testkit.Timing, release bool, tr *testkit.Tracker, logs *testkit.Logs) *clientGoCandidate {
	t.Helper()
	c := &clientGoCandidate{id: id, rec: &testkit.Wire{}}
	cs := kubernetes.NewForConfigOrDie(c.rec.Wrap(cp.Config()))
	le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock: &resourcelock.LeaseLock{
			LeaseMeta:  metav1.ObjectMeta{Namespace: ns, Name: name},
			Client:     cs.CoordinationV1(),
			LockConfig: resourcelock.ResourceLockConfig{Identity: id},
		},
		LeaseDuration:   tm.L,
		RenewDeadline:   tm.D,
		RetryPeriod:     tm.P,
		ReleaseOnCancel: release,
		Name:            id,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(ctx context.Context) {
				// client-go releases without waiting for this function
				// to return, so its term counts until ctx is cancelled.
				exit := tr.Enter(id, ctx)
				defer exit()
				<-ctx.Done()
			},
			OnStoppedLeading: func() {},
			OnNewLeader: func(identity string) {
				c.mu.Lock()
				c.leaders = append(c.leaders, identity)
				c.mu.Unlock()
			},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	c.Background = testkit.Go(t, klog.NewContext(context.Background(), logs.Logger(id)), "client-go "+id, 15*time.Second, func(ctx context.Context) error {
		le.Run(ctx)
		return nil
	})
	return c
}

func (c *clientGoCandidate) stop(t *testing.T) {
	t.Helper()
	_ = c.Stop(t, 10*time.Second) // client-go's Run returns nothing
}

func (c *clientGoCandidate) waitSees(t *testing.T, id string, within time.Duration) {
	t.Helper()
	testkit.Eventually(t, within, c.id+" to observe "+id, func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, l := range c.leaders {
			if l == id {
				return true
			}
		}
		return false
	})
}

// lastWrite returns the last successful write of the Lease by rec's client
// naming holder ("" for a release).
func lastWrite(rec *testkit.Wire, holder string) (testkit.Call, bool) {
	var last testkit.Call
	found := false
	for _, c := range rec.All() {
		if (c.Verb == "update" || c.Verb == "create") && c.HasBody && c.Holder == holder && c.OK() {
			last, found = c, true
		}
	}
	return last, found
}

// clientGoReleasedClaim is the leaseDurationSeconds that client-go's
// release writes.
const clientGoReleasedClaim = time.Second

// clientGoPoll is the longest interval between two polls of a client-go
// candidate: wait.JitterUntil(RetryPeriod, JitterFactor 1.2).
func clientGoPoll(tm testkit.Timing) time.Duration { return tm.P + tm.P*12/10 }

// The identities of the two electors of TestInteropWithClientGo.
const cg, lh = "client-go", "leasehold"

// clientGoFirst starts client-go (ReleaseOnCancel as release), waits for it
// to lead, then starts leasehold (ReleaseOnCancel), which sees client-go
// lead and does not start itself.
func clientGoFirst(t *testing.T, release bool) (*testkit.Tracker, *clientGoCandidate, *candidate) {
	t.Helper()
	ns, name := newNamespace(t), "interop"
	tr, logs := testkit.NewTracker(), testkit.NewLogs(t, 4)
	old := startClientGo(t, cg, ns, name, interopT, release, tr, logs)
	if s := tr.NextStart(t, 10*time.Second); s.ID != cg {
		t.Fatalf("%s started first", s.ID)
	}
	ours := startCandidate(t, candidateOpts{id: lh, ns: ns, name: name, t: interopT, release: true, tr: tr, logs: logs})
	ours.waitSees(t, cg, 5*time.Second)
	tr.NoStart(t, 3*interopT.P, "client-go holds the lease")
	return tr, old, ours
}

// leaseholdFirst starts leasehold (ReleaseOnCancel as release), waits for
// it to lead, then starts client-go (ReleaseOnCancel), which sees
// leasehold lead and does not start itself.
func leaseholdFirst(t *testing.T, release bool) (*testkit.Tracker, *candidate, *clientGoCandidate) {
	t.Helper()
	ns, name := newNamespace(t), "interop"
	tr, logs := testkit.NewTracker(), testkit.NewLogs(t, 4)
	ours := startCandidate(t, candidateOpts{id: lh, ns: ns, name: name, t: interopT, release: release, tr: tr, logs: logs})
	if s := tr.NextStart(t, 10*time.Second); s.ID != lh {
		t.Fatalf("%s started first", s.ID)
	}
	other := startClientGo(t, cg, ns, name, interopT, true, tr, logs)
	other.waitSees(t, lh, 5*time.Second)
	tr.NoStart(t, 3*interopT.P, "leasehold holds the lease")
	return tr, ours, other
}

// leasehold and client-go electors share one Lease during a migration:
// each hands over to the other on release and on expiry, and their work
// never overlaps.
func TestInteropWithClientGo(t *testing.T) {

	t.Run("ClientGoReleases", func(t *testing.T) {
		tr, old, ours := clientGoFirst(t, true)

		old.stop(t)
		next := tr.NextStart(t, 5*time.Second)
		rel, ok := lastWrite(old.rec, "")
		if next.ID != lh || !ok {
			t.Fatalf("after client-go's release (found: %v), %s started; want leasehold", ok, next.ID)
		}
		lat := next.At.Sub(rel.Sent)
		t.Logf("leasehold took over %v after client-go's release was sent", lat.Round(time.Microsecond))
		checkReleaseHandoff(t, "leasehold after client-go's release", lat, interopT, ours.rec, rel.Sent)
		// client-go's release writes leaseDurationSeconds 1, so a follower
		// that waited for the released record to expire would take over
		// 1s after it saw the release: leasehold's takeover write must go
		// out sooner. (Only the watch's delivery lies in between, normally
		// milliseconds.)
		acquire, ok := lastWrite(ours.rec, lh)
		if !ok {
			t.Fatal("no successful leasehold takeover write recorded")
		}
		if d := acquire.Sent.Sub(rel.Sent); d >= clientGoReleasedClaim {
			t.Errorf("leasehold sent its takeover %v after client-go's release; want sooner than the released record's claim (%v): it acts on a release at once", d, clientGoReleasedClaim)
		}
		tr.NoStart(t, 2*interopT.P, "leasehold holds the lease")
		testkit.Must(t, ours.stop(t))
		tr.Check(t)
	})

	t.Run("LeaseholdReleases", func(t *testing.T) {
		tr, ours, other := leaseholdFirst(t, true)

		testkit.Must(t, ours.stop(t))
		next := tr.NextStart(t, clientGoPoll(interopT)+3*time.Second)
		rel, ok := lastWrite(ours.rec, "")
		if next.ID != cg || !ok {
			t.Fatalf("after leasehold's release (found: %v), %s started; want client-go", ok, next.ID)
		}
		lat := next.At.Sub(rel.Sent)
		t.Logf("client-go took over %v after leasehold's release was sent (it polls every %v)", lat.Round(time.Millisecond), interopT.P)
		if lat > clientGoPoll(interopT)+time.Second {
			t.Errorf("client-go took over %v after the release, want within its poll interval (%v)", lat, clientGoPoll(interopT))
		}
		tr.NoStart(t, 2*interopT.P, "client-go holds the lease")
		other.stop(t)
		tr.Check(t)
	})

	t.Run("ClientGoExpires", func(t *testing.T) {
		tr, old, ours := clientGoFirst(t, false)

		old.stop(t) // stops renewing, does not release
		renewal, ok := lastWrite(old.rec, cg)
		if !ok {
			t.Fatal("no successful client-go write recorded")
		}
		next := tr.NextStart(t, interopT.L+5*time.Second)
		if next.ID != lh {
			t.Fatalf("%s started; want leasehold", next.ID)
		}
		after := next.At.Sub(renewal.Sent)
		t.Logf("leasehold took over %v after client-go's last renewal (LeaseDuration %v)", after.Round(time.Millisecond), interopT.L)
		if after < interopT.L {
			t.Errorf("leasehold took over %v after client-go's last renewal, before the lease expired (%v)", after, interopT.L)
		}
		// Soon after expiry: it saw the renewal on its watch and wrote its
		// takeover at the instant of expiry; each of the two requests
		// takes at most the request timeout, and a RetryPeriod is room
		// for a loaded machine.
		if late := interopT.L + interopT.P + leasehold.RequestTimeout(interopT.D); after > late {
			t.Errorf("leasehold took over %v after client-go's last renewal, want soon after expiry (by L+P+RequestTimeout = %v)", after, late)
		}
		testkit.Must(t, ours.stop(t))
		tr.Check(t)
	})

	t.Run("LeaseholdExpires", func(t *testing.T) {
		tr, ours, other := leaseholdFirst(t, false)

		testkit.Must(t, ours.stop(t)) // no ReleaseOnCancel: stops renewing
		if _, released := lastWrite(ours.rec, ""); released {
			t.Fatal("leasehold released the Lease without ReleaseOnCancel")
		}
		renewal, ok := lastWrite(ours.rec, lh)
		if !ok {
			t.Fatal("no successful leasehold write recorded")
		}
		next := tr.NextStart(t, interopT.L+2*clientGoPoll(interopT)+5*time.Second)
		if next.ID != cg {
			t.Fatalf("%s started; want client-go", next.ID)
		}
		after := next.At.Sub(renewal.Sent)
		t.Logf("client-go took over %v after leasehold's last renewal (LeaseDuration %v, client-go polls every %v)", after.Round(time.Millisecond), interopT.L, interopT.P)
		if after < interopT.L {
			t.Errorf("client-go took over %v after leasehold's last renewal, before the lease expired (%v)", after, interopT.L)
		}
		// client-go saw the renewal up to one poll late, and takes over at
		// the first poll after expiry.
		if late := interopT.L + 2*clientGoPoll(interopT) + time.Second; after > late {
			t.Errorf("client-go took over %v after leasehold's last renewal, want soon after expiry (by %v)", after, late)
		}
		other.stop(t)
		tr.Check(t)
	})
}

// interopT are the timings of the interop tests. RetryPeriod is a whole
// second because client-go compares lease records whose renewTime it
// truncates to whole seconds: with a sub-second RetryPeriod two renewals
// can look identical to it, and it takes over before the lease expired
// (seen with 500ms: a takeover 2.8s after the last renewal of a 3s lease).
// Mixed fleets need RetryPeriod >= 1s; the README says so.
var interopT = testkit.Timing{L: 4 * time.Second, D: 2 * time.Second, P: time.Second}
