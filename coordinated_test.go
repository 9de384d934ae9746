package leasehold

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/go-logr/logr"
	coordinationv1 "k8s.io/api/coordination/v1"
	coordinationv1beta1 "k8s.io/api/coordination/v1beta1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	clocktesting "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"

	"github.com/leasehold/leasehold/internal/leaserecord"
	"github.com/leasehold/leasehold/leaseholdtest"
)

// The coordinated tests run the harness's candidates, made with
// NewCoordinated, on one fake clock: Leases on the harness's
// leaseholdtest.Server, LeaseCandidates on one of client-go's fake
// clientsets. The test plays kube-apiserver's election controller: it
// assigns the Lease (holder set, acquireTime unset, 5s, a strategy), marks
// a better candidate in spec.preferredHolder, and pings candidates.

type coordinatedWorld struct {
	*harness
	cs *fake.Clientset
}

func newCoordinatedWorld(t *testing.T) *coordinatedWorld {
	return &coordinatedWorld{harness: newHarness(t), cs: fake.NewClientset()}
}

// coordinated makes a candidate as h.candidate does, with NewCoordinated.
func (w *coordinatedWorld) coordinated(id, binary, emulation string, mutate ...func(*Config)) *candidate {
	w.t.Helper()
	c := w.candidate(id, mutate...)
	e, err := NewCoordinated(c.cfg, CandidateConfig{Client: w.cs.CoordinationV1beta1(), BinaryVersion: binary, EmulationVersion: emulation})
	if err != nil {
		w.t.Fatalf("NewCoordinated: %v", err)
	}
	c.e = e
	return c
}

// leaseCandidate returns the LeaseCandidate named id, nil if none.
func (w *coordinatedWorld) leaseCandidate(id string) *coordinationv1beta1.LeaseCandidate {
	lc, err := w.cs.CoordinationV1beta1().LeaseCandidates(testNS).Get(context.Background(), id, metav1.GetOptions{})
	if err != nil {
		return nil
	}
	return lc
}

// assign writes the Lease as the election controller does when it elects
// id: holder id, no acquireTime, 5s, renewTime now, the strategy, no
// preferred holder; the rest (transitions, annotations) kept.
func (w *coordinatedWorld) assign(id string) {
	l := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: testNS, Name: testName}}
	if cur := w.lease(); cur != nil {
		l = cur
	}
	now := metav1.NewMicroTime(w.clock.Now())
	l.Spec.HolderIdentity = ptr.To(id)
	l.Spec.AcquireTime = nil
	l.Spec.RenewTime = &now
	l.Spec.LeaseDurationSeconds = ptr.To[int32](5)
	l.Spec.Strategy = ptr.To(coordinationv1.OldestEmulationVersion)
	l.Spec.PreferredHolder = nil
	w.srv.Put(l)
}

// prefer marks id as the better candidate, as the controller does on a
// held Lease: only spec.preferredHolder changes.
func (w *coordinatedWorld) prefer(id string) {
	l := w.lease()
	l.Spec.PreferredHolder = ptr.To(id)
	w.srv.Put(l)
}

// ping sets id's pingTime to at, as the controller does.
func (w *coordinatedWorld) ping(id string, at time.Time) {
	w.t.Helper()
	lc := w.leaseCandidate(id)
	if lc == nil {
		w.t.Fatalf("no LeaseCandidate %q to ping", id)
	}
	lc.Spec.PingTime = &metav1.MicroTime{Time: at}
	if _, err := w.cs.CoordinationV1beta1().LeaseCandidates(testNS).Update(context.Background(), lc, metav1.UpdateOptions{}); err != nil {
		w.t.Fatal(err)
	}
}

// candidateWrites counts the LeaseCandidate writes of the given verb.
func (w *coordinatedWorld) candidateWrites(verb string) int {
	n := 0
	for _, a := range w.cs.Actions() {
		if a.GetVerb() == verb && a.GetResource().Resource == "leasecandidates" {
			n++
		}
	}
	return n
}

// A candidate registers itself with its versions and answers every ping
// once, with a renewTime the controller counts even when its clock runs
// behind the controller's; it renews every five minutes and registers
// again after a deletion.
func TestCoordinatedRegistersAndAnswersPings(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {

		w := newCoordinatedWorld(t)
		a := w.coordinated("a", "v1.31.2", "1.30.0").start()
		lc := w.leaseCandidate("a")
		if lc == nil {
			t.Fatal("no LeaseCandidate registered")
		}
		s := lc.Spec
		if s.LeaseName != testName || s.BinaryVersion != "1.31.2" || s.EmulationVersion != "1.30.0" ||
			s.Strategy != coordinationv1.OldestEmulationVersion || s.RenewTime == nil || !s.RenewTime.Time.Equal(t0) {
			t.Fatalf("registered %+v", s)
		}
		updates := w.candidateWrites("update")

		w.advance(time.Second)
		w.ping("a", w.clock.Now())
		eventually(t, "the ping answered", func() bool { return !pinged(w.leaseCandidate("a")) })
		lc = w.leaseCandidate("a")
		if pinged(lc) || w.candidateWrites("update") != updates+2 { // the ping, the answer
			t.Fatalf("ping at %v not answered once: renewTime %v, %d writes", lc.Spec.PingTime, lc.Spec.RenewTime, w.candidateWrites("update")-updates)
		}

		// A controller whose clock is 10s ahead: the answer carries its
		// pingTime, or the controller would take it for no answer at all.
		ahead := w.clock.Now().Add(10 * time.Second)
		w.ping("a", ahead)
		eventually(t, "the ping from ahead answered", func() bool { return !pinged(w.leaseCandidate("a")) })
		if lc = w.leaseCandidate("a"); !lc.Spec.RenewTime.Time.Equal(ahead) {
			t.Fatalf("answer to a ping from a clock ahead: renewTime %v, want the pingTime %v", lc.Spec.RenewTime.Time, ahead)
		}
		if got := w.candidateWrites("update") - updates; got != 4 {
			t.Fatalf("%d LeaseCandidate updates for two pings, want 4 (no answer loop)", got)
		}

		renewed := lc.Spec.RenewTime.Time
		w.advance(candidateRenewEvery)
		eventually(t, fmt.Sprintf("a renewal %v after the last", candidateRenewEvery), func() bool {
			return w.leaseCandidate("a").Spec.RenewTime.Time.After(renewed)
		})

		if err := w.cs.CoordinationV1beta1().LeaseCandidates(testNS).Delete(context.Background(), "a", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		w.advance(time.Second) // the backoff before registering again
		eventually(t, "registered again after a deletion", func() bool { return w.leaseCandidate("a") != nil })
		_ = a

	})
}

// Candidates never take the Lease themselves: the controller's assignment
// starts a term at once (the fake clock standing still), with a
// conditional write that makes it the candidate's own.
func TestCoordinatedTakesUpTheControllersAssignment(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {

		w := newCoordinatedWorld(t)
		a := w.coordinated("a", "1.31.0", "").start()
		b := w.coordinated("b", "1.31.0", "").start()
		w.advance(controllerGrace - time.Second)
		if l := w.lease(); l != nil || w.srv.Requests("a", "create")+w.srv.Requests("b", "create") != 0 {
			t.Fatalf("a candidate took the lease while the controller had time to: %v", l)
		}

		w.assign("b")
		b.waitLeader() // the fake clock has not moved
		l := w.lease()
		if leaserecord.Holder(l) != "b" || l.Spec.AcquireTime == nil || leaserecord.Transitions(l) != 1 || *l.Spec.LeaseDurationSeconds != 15 {
			t.Fatalf("the term was not taken up as leasehold's: %+v", l.Spec)
		}
		if l.Spec.Strategy == nil || *l.Spec.Strategy != coordinationv1.OldestEmulationVersion {
			t.Fatal("the controller's strategy was dropped")
		}
		eventually(t, "a follows b", func() bool { return a.e.Leader() == "b" })
		if len(b.logs.matching("Taking up the term")) != 1 || len(b.logs.matching("not written by this process")) != 0 {
			t.Fatalf("b's log:\n%s", b.logs)
		}
		w.advance(30 * time.Second)
		if !b.e.IsLeader() || a.e.IsLeader() || w.maxWorking.Load() != 1 {
			t.Fatal("b did not keep the lease alone")
		}

	})
}

// The controller names a better candidate: the leader hands the Lease back
// in no fake time at all, releasing it with an empty holder (never a
// missing one), the better candidate does not take it until the controller
// assigns it, and a leader that yielded withdraws its LeaseCandidate when
// Run returns.
func TestCoordinatedYieldsToTheControllersChoice(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {

		w := newCoordinatedWorld(t)
		a := w.coordinated("a", "1.31.0", "").start()
		b := w.coordinated("b", "1.30.0", "").start()
		w.assign("a")
		a.waitLeader()

		w.prefer("b")
		eventually(t, "a released the Lease", func() bool { return w.holder() == "" && a.count("stopped") == 1 })
		a.following("")
		l := w.lease()
		if l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity != "" {
			t.Fatalf("released with holderIdentity %v, want \"\": kube-apiserver's election controller panics on a missing holder", l.Spec.HolderIdentity)
		}
		if w.srv.Requests("b", "update")+w.srv.Requests("b", "create") != 0 || b.e.IsLeader() {
			t.Fatal("b took the released lease before the controller assigned it")
		}
		if w.leaseCandidate("a") == nil {
			t.Fatal("a withdrew its LeaseCandidate after a yield: a yielded replica is still a candidate")
		}
		start := w.clock.Now()
		w.assign("b")
		b.waitLeader()
		if w.clock.Now() != start || w.maxWorking.Load() != 1 {
			t.Fatal("the handover took fake time, or two works ran")
		}
		if _, ok := w.lease().Annotations[PreferredHolderAnnotation]; ok {
			t.Fatal("the new term kept the handoff annotation")
		}

	})
}

// A controller whose clock runs ahead assigns the Lease while another
// holder's claim still runs by this process's clock: the term starts only
// when that claim ends.
func TestCoordinatedWaitsOutTheLastHoldersClaim(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {

		w := newCoordinatedWorld(t)
		w.putLease("x", 15) // x renewed at t0
		a := w.coordinated("a", "1.31.0", "").start()
		w.advanceTo(2 * time.Second)
		w.assign("a")
		w.advanceTo(14500 * time.Millisecond)
		if a.e.IsLeader() || w.srv.Requests("a", "update") != 0 {
			t.Fatal("took up the term while x's claim still ran")
		}
		w.advanceTo(15 * time.Second)
		a.waitLeader()
		if len(a.logs.matching("previous holder's claim runs out")) != 1 {
			t.Fatalf("the wait was not logged:\n%s", a.logs)
		}

	})
}

// With no election controller (the API served, the gate off), a free Lease
// is campaigned for after controllerGrace, with one log line.
func TestCoordinatedCampaignsWhenNoControllerAnswers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {

		w := newCoordinatedWorld(t)
		a := w.coordinated("a", "1.31.0", "").start()
		w.advanceTo(controllerGrace - 500*time.Millisecond)
		if w.lease() != nil {
			t.Fatal("campaigned before the controller's grace ran out")
		}
		// The grace runs from a's first look at the free Lease; on a loaded
		// machine a's goroutine may take that look a clock step or two after
		// the test started the clock. Allow that much, no more.
		w.advanceTo(controllerGrace)
		for !a.e.IsLeader() && w.clock.Since(t0) < controllerGrace+2*time.Second {
			w.advance(100 * time.Millisecond)
		}
		a.waitLeader()
		if n := len(a.logs.matching("No election controller named a holder")); n != 1 {
			t.Fatalf("logged %d times, want once:\n%s", n, a.logs)
		}

	})
}

// missingAPI is the 404 kube-apiserver answers for a resource it does not
// serve: no details, unlike a missing object or namespace.
func missingAPI() error {
	return &apierrors.StatusError{ErrStatus: metav1.Status{Status: metav1.StatusFailure, Code: 404,
		Reason: metav1.StatusReasonNotFound, Message: "the server could not find the requested resource", Details: &metav1.StatusDetails{}}}
}

// Where the LeaseCandidate API is not served, the elector says so in one
// line and campaigns as New's does.
func TestCoordinatedFallsBackWithoutTheAPI(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {

		w := newCoordinatedWorld(t)
		w.cs.PrependReactor("*", "leasecandidates", func(k8stesting.Action) (bool, runtime.Object, error) {
			return true, nil, missingAPI()
		})
		a := w.coordinated("a", "1.31.0", "").start()
		a.waitLeader() // the fake clock has not moved: a plain election
		if n := len(a.logs.matching("LeaseCandidate API (coordination.k8s.io/v1beta1) is not served")); n != 1 {
			t.Fatalf("logged %d times, want once:\n%s", n, a.logs)
		}
		if got := len(w.cs.Actions()); got != 1 {
			t.Fatalf("%d LeaseCandidate requests, want the one that found the API missing", got)
		}
		l := w.lease()
		if l.Spec.AcquireTime == nil || leaserecord.Holder(l) != "a" {
			t.Fatalf("lease %+v", l.Spec)
		}

	})
}

// The three 404s kube-apiserver answers, as seen on a real one.
func TestCandidateAPIMissing(t *testing.T) {
	gr := schema.GroupResource{Group: "coordination.k8s.io", Resource: "leasecandidates"}
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"resource not served", missingAPI(), true},
		{"object not found", apierrors.NewNotFound(gr, "a"), false},
		{"namespace not found", apierrors.NewNotFound(schema.GroupResource{Resource: "namespaces"}, "ns"), false},
		{"forbidden", apierrors.NewForbidden(gr, "a", errors.New("no")), false},
	} {
		if got := candidateAPIMissing(tc.err); got != tc.want {
			t.Errorf("%s: candidateAPIMissing = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// On shutdown the candidate withdraws before the leader releases: a
// controller that saw the release first could pick the leaving process
// again.
func TestCoordinatedWithdrawsBeforeStepDown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {

		w := newCoordinatedWorld(t)
		var mu sync.Mutex
		var order []string
		note := func(s string) {
			mu.Lock()
			defer mu.Unlock()
			order = append(order, s)
		}
		w.cs.PrependReactor("delete", "leasecandidates", func(k8stesting.Action) (bool, runtime.Object, error) {
			<-w.clock.After(50 * time.Millisecond) // a slow answer (in fake time): the release must still wait for it
			note("withdraw")
			return false, nil, nil
		})
		w.srv.AddHook(func(_ context.Context, req leaseholdtest.Request) error {
			if req.Verb == "update" && leaserecord.Holder(req.Lease) == "" {
				note("release")
			}
			return nil
		})
		a := w.coordinated("a", "1.31.0", "", func(c *Config) { c.ReleaseOnCancel = true }).start()
		w.assign("a")
		a.waitLeader()
		a.cancel()
		if err := a.wait(); err != nil {
			t.Fatalf("Run = %v", err)
		}
		mu.Lock()
		defer mu.Unlock()
		if strings.Join(order, ",") != "withdraw,release" {
			t.Fatalf("order %v, want withdraw before release", order)
		}

	})
}

// NewCoordinated names every problem of the Config and the CandidateConfig
// at once.
func TestNewCoordinatedValidates(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {

		h := newHarness(t)
		lock := &LeaseLock{Namespace: testNS, Name: testName, Identity: "pod/a", Client: h.srv.Client("a")}
		_, err := NewCoordinated(Config{Lock: lock, Callbacks: Callbacks{OnStartedLeading: func(context.Context) {}}},
			CandidateConfig{BinaryVersion: "1.31", EmulationVersion: "1.32.0"})
		if !errors.Is(err, ErrInvalidConfig) {
			t.Fatalf("err = %v, want ErrInvalidConfig", err)
		}
		for _, want := range []string{"CandidateConfig.Client is nil", `BinaryVersion "1.31" is not a semantic version`, `Lock.Identity "pod/a" cannot name a LeaseCandidate`} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error does not say %q:\n%v", want, err)
			}
		}
		_, err = NewCoordinated(Config{Lock: lock}, CandidateConfig{Client: fake.NewClientset().CoordinationV1beta1(), BinaryVersion: "1.31.0", EmulationVersion: "1.32.0"})
		for _, want := range []string{"OnStartedLeading is nil", "EmulationVersion 1.32.0 is above BinaryVersion 1.31.0"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error does not say %q:\n%v", want, err)
			}
		}

	})
}

// After a yield, a plain elector with Rejoin sits out one lease duration;
// a coordinated one takes up at once a term the controller assigns it
// again (the controller's choice), and the yield's hint is only a hint.
func TestCoordinatedReassignedAfterYield(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {

		w := newCoordinatedWorld(t)
		a := w.coordinated("a", "1.30.0", "", func(c *Config) { c.Rejoin = true }).start()
		b := w.coordinated("b", "1.31.0", "").start()
		w.assign("a")
		a.waitLeader()
		if err := a.e.Yield(context.Background(), "b"); err != nil {
			t.Fatalf("Yield = %v", err)
		}
		if b.e.IsLeader() || leaserecord.Holder(w.lease()) != "" {
			t.Fatal("the yield's successor took the lease without the controller")
		}
		w.assign("a") // the controller still prefers a (the older emulation version)
		a.waitLeader()
		// IsLeader turns true before the work records its start.
		eventually(t, "a's second term started", func() bool { return a.count("started") == 2 })
		if a.count("started") != 2 || w.maxWorking.Load() != 1 {
			t.Fatalf("a's terms %d, max works at once %d", a.count("started"), w.maxWorking.Load())
		}

	})
}

// Issue 20, 4: a candidate whose first sight of the Lease is the election
// controller's assignment to it never saw the previous holder, whose work
// may still run (the controller's clock may run ahead): it starts only a
// whole lease duration after it first saw the assignment.
func TestCoordinatedAssignmentSeenFirstWaitsAWholeClaim(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := newCoordinatedWorld(t)
		w.putLease("x", 15) // x leads; the controller then assigns a
		w.assign("a")
		a := w.coordinated("a", "1.30.0", "").start()
		w.advance(14 * time.Second)
		if a.count("started") != 0 {
			t.Fatalf("a took up the assignment %v after first seeing it, while x's work may still run", w.clock.Since(t0))
		}
		w.advance(2 * time.Second)
		a.waitLeader()
	})
}

// A Lease naming this identity with acquireTime set was written by a
// leasehold elector (a previous incarnation of this process), not by the
// election controller: it is not an assignment, and is treated as held by
// another process until it expires.
func TestCoordinatedOwnOldWriteIsNotAnAssignment(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := newCoordinatedWorld(t)
		l := w.putLease("a", 15)
		now := metav1.NewMicroTime(w.clock.Now())
		l.Spec.AcquireTime = &now // as every leasehold write sets it
		w.srv.Put(l)
		a := w.coordinated("a", "1.30.0", "").start()
		w.advance(time.Second)
		if n := len(a.logs.matching("names this identity but was not written by this process")); n != 1 {
			t.Fatalf("%d lines treating the old write as another process's, want 1:\n%s", n, a.logs)
		}
		if n := len(a.logs.matching("election controller assigned")); n != 0 {
			t.Fatalf("an elector's own old write taken for the controller's assignment:\n%s", a.logs)
		}
	})
}

// The controller's assignment naming this process is no identity
// conflict, even right after this process's own term on the Lease: a
// leader whose Lease an operator deleted, and which the controller then
// created again assigned to it, takes the new term up. (Found by the
// simulator's coordinated world: Run returned ErrIdentityConflict.)
func TestCoordinatedReassignedAfterDeletion(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := newCoordinatedWorld(t)
		a := w.coordinated("a", "1.30.0", "", func(c *Config) { c.Rejoin = true })
		a.hold = make(chan struct{}) // its work returns only when told
		a.start()
		w.assign("a")
		a.waitLeader()
		w.advance(500 * time.Millisecond) // between renewals: the controller's stamp is not a's
		w.srv.Delete(testNS, testName)
		w.settle()
		// The controller creates the Lease again, assigned to a, while a's
		// work of the deleted term is still returning.
		w.assign("a")
		w.advance(time.Second)
		close(a.hold)
		if err := a.returnsWithin(30 * time.Second); err != nil {
			t.Fatalf("Run returned %v after the controller assigned the re-created Lease to it", err)
		}
		a.following("a")
		eventually(t, "a's second term started", func() bool { return a.count("started") == 2 })
		if w.maxWorking.Load() != 1 {
			t.Fatalf("max works at once %d", w.maxWorking.Load())
		}
	})
}

// The controller may mark a better candidate on an assignment not taken
// up yet (kube-apiserver cannot tell the two apart): two versions naming
// this process, neither its own, are the controller's writes, not a
// second process with its identity. (Found by the simulator's
// coordinated world: Run returned ErrIdentityConflict within a second.)
// The assignee takes the term up once the previous holder's claim has run
// out; the controller marks its better candidate again on the term taken
// up, and the leader hands over as for any preferredHolder.
func TestCoordinatedPreferredHolderOnAnAssignmentNotTakenUp(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := newCoordinatedWorld(t)
		w.putLease("x", 15) // x leads; the controller then assigns a
		w.assign("a")
		a := w.coordinated("a", "1.30.0", "", func(c *Config) { c.Rejoin = true }).start()
		b := w.coordinated("b", "1.29.0", "").start()
		w.advance(5 * time.Second) // a waits out x's claim
		w.prefer("b")
		if err := a.returnsWithin(20 * time.Second); err != nil {
			t.Fatalf("Run returned %v after the controller marked a better candidate on a's assignment", err)
		}
		if len(a.logs.matching("another live process")) != 0 || len(a.logs.matching("not written by this process")) != 0 {
			t.Fatalf("the controller's writes taken for another process's:\n%s", a.logs)
		}
		a.waitLeader()
		w.prefer("b")
		eventually(t, "a released the Lease", func() bool { return w.holder() == "" })
		w.assign("b")
		b.waitLeader()
		a.following("b")
		if w.maxWorking.Load() != 1 {
			t.Fatalf("max works at once %d", w.maxWorking.Load())
		}
	})
}

// Run's cancellation cancels the work at once, however slow the
// LeaseCandidate's withdrawal: StepDownTimeout counts from the
// cancellation, and only the release waits for the withdrawal. (Found by
// the simulator's coordinated world: with a slow API server the work ran
// on for the withdrawal's request timeout, 5s, and Run returned 29.4s
// after the cancellation, past StepDownTimeout plus a request.)
func TestCoordinatedCancelStopsTheWorkWhileWithdrawing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := newCoordinatedWorld(t)
		var withdrawn atomic.Bool
		w.cs.PrependReactor("delete", "leasecandidates", func(k8stesting.Action) (bool, runtime.Object, error) {
			<-w.clock.After(3 * time.Second) // a slow API server
			withdrawn.Store(true)
			return false, nil, nil
		})
		a := w.coordinated("a", "1.31.0", "", func(c *Config) { c.ReleaseOnCancel = true }).start()
		w.assign("a")
		a.waitLeader()
		start := w.clock.Now()
		a.cancel()
		w.settle()
		if a.count("returned") != 1 {
			t.Fatalf("the work was not cancelled at once: it waits for the LeaseCandidate's withdrawal (%v so far)", w.clock.Since(start))
		}
		if withdrawn.Load() || leaserecord.Holder(w.lease()) != "a" {
			t.Fatal("released before the withdrawal was answered")
		}
		if err := a.wait(); err != nil {
			t.Fatalf("Run = %v", err)
		}
		if !withdrawn.Load() || leaserecord.Holder(w.lease()) != "" {
			t.Fatalf("Run returned without withdrawing and releasing: holder %q", leaserecord.Holder(w.lease()))
		}
	})
}

// A lagging watch delivers, at one instant, the term another candidate
// took up, the controller's preferredHolder on it, and the controller's
// assignment to this process: the newest-wins mailbox hands the campaign
// the assignment alone. The term taken up before it still has its claim,
// counted from now, and the assignee waits it out. (Found by the
// simulator's coordinated world, seed 2713 of make sim: the assignee took
// the term up at once, while the other's work ran.)
func TestCoordinatedAssignmentWaitsOutASupersededTerm(t *testing.T) {
	clk := clocktesting.NewFakeClock(t0)
	e, err := NewCoordinated(Config{
		Lock:      &LeaseLock{Namespace: testNS, Name: testName, Identity: "c", Client: &stubLeases{}},
		Clock:     clk,
		Callbacks: Callbacks{OnStartedLeading: func(context.Context) {}},
	}, CandidateConfig{Client: fake.NewClientset().CoordinationV1beta1(), BinaryVersion: "1.31.0"})
	if err != nil {
		t.Fatal(err)
	}
	r := &run{e: e, log: logr.Discard(), notifier: newLeaderNotifier(logr.Discard(), func(string) {})}
	defer r.notifier.close()
	version := func(rv, holder string, acquired bool) *coordinationv1.Lease {
		stamp := metav1.NewMicroTime(clk.Now())
		l := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: testNS, Name: testName, UID: "u", ResourceVersion: rv},
			Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To(holder), RenewTime: &stamp, LeaseDurationSeconds: ptr.To[int32](15)}}
		if acquired {
			l.Spec.AcquireTime = &stamp
		}
		return l
	}
	if err := r.observe(observation{lease: version("10", "b", true)}); err != nil {
		t.Fatal(err)
	}
	e.coord.decide(r, clk.Now(), actWait, clk.Now().Add(15*time.Second))
	clk.Step(time.Minute) // b's claim has long run out
	taken := version("26", "a", true)
	preferred := taken.DeepCopy()
	preferred.ResourceVersion, preferred.Spec.PreferredHolder = "27", ptr.To("c")
	assigned := version("28", "c", false)
	if err := r.observe(observation{lease: assigned, superseded: []*coordinationv1.Lease{taken, preferred}}); err != nil {
		t.Fatal(err)
	}
	now := clk.Now()
	if act, at := e.coord.decide(r, now, actWait, now); act != actWait || at.Sub(now) != 15*time.Second {
		t.Fatalf("decide = %v in %v; want to wait out a's claim, 15s from now", act, at.Sub(now))
	}
}
