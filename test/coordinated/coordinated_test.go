// Package coordinated tests leasehold's coordinated leader election
// (KEP-4355, leasehold.NewCoordinated) on a real kube-apiserver and etcd:
// with kube-apiserver's election controller on (the
// CoordinatedLeaderElection gate and the coordination.k8s.io/v1beta1 API),
// against client-go's Coordinated: true in the same run, and the fallback
// to plain election where the LeaseCandidate API is not served. Each test
// starts its own control plane, as the gates differ.
package coordinated

import (
	"context"
	"net/http"
	"sync"
	"syscall"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"

	"github.com/leasehold/leasehold"
	"github.com/leasehold/leasehold/test/bench"
	"github.com/leasehold/leasehold/test/controlplane"
	"github.com/leasehold/leasehold/test/deployyaml"
	"github.com/leasehold/leasehold/test/testkit"
)

// start starts a control plane for one test, failing (never skipping)
// when it cannot.
func start(t *testing.T, opts ...controlplane.Option) (*controlplane.ControlPlane, *rest.Config, kubernetes.Interface) {
	t.Helper()
	cp := testkit.StartControlPlane(t, opts...)
	cfg := cp.Config()
	cfg.WarningHandler = rest.NoWarnings{} // LeaseCandidate v1beta1 is deprecated: a warning per request
	return cp, cfg, kubernetes.NewForConfigOrDie(cfg)
}

// apiServerAlive fails the test if kube-apiserver's process has exited.
func apiServerAlive(t *testing.T, cp *controlplane.ControlPlane, pid int) {
	t.Helper()
	if err := syscall.Kill(pid, 0); err != nil {
		t.Fatalf("kube-apiserver (pid %d) has exited: %v", pid, err)
	}
}

// An older-emulation-version candidate joins a running election: the
// controller names it in spec.preferredHolder, leasehold's leader yields
// (its work returns, then it releases), the controller assigns the Lease
// to the newcomer, which takes it up: no overlap, and the API server
// survives the release. client-go's Coordinated: true does the same in the
// same run; the times are reported, not asserted.
func TestOlderCandidateTakesOverWithNoOverlap(t *testing.T) {
	cp, admin, _ := start(t, bench.CoordinatedControlPlane()...)
	api, err := cp.APIServer()
	if err != nil {
		t.Fatal(err)
	}
	pid := api.PID()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	rounds := map[bench.Lib]*bench.CoordinatedRound{}
	for _, lib := range bench.Libs {
		r, err := bench.CoordinatedHandover(ctx, admin, lib, "default", "handover-"+lib.String(), bench.DefaultTimings)
		if err != nil {
			t.Fatalf("%s: %v", lib, err)
		}
		t.Logf("%s", r)
		rounds[lib] = r
		apiServerAlive(t, cp, pid)
	}
	lh := rounds[bench.Leasehold]
	if lh.Gap() < 0 {
		t.Errorf("leasehold: the new work started %v before the old one returned", -lh.Gap())
	}
	if lh.Marked.IsZero() || lh.Released.IsZero() || lh.Assigned.IsZero() || lh.TakenUp.IsZero() {
		t.Errorf("leasehold: not the controller's handover (mark, release, assignment, take-up): %s", lh)
	}
	if lh.Released.After(lh.Assigned) || lh.TakenUp.Before(lh.Assigned) {
		t.Errorf("leasehold: not in the order release, assignment, take-up: %s", lh)
	}
	cg := rounds[bench.ClientGo]
	t.Logf("handover, older candidate started → its work started: leasehold %v, client-go %v; leaderless: leasehold %v, client-go %v",
		lh.Handover().Round(time.Millisecond), cg.Handover().Round(time.Millisecond), lh.Gap().Round(time.Millisecond), cg.Gap().Round(time.Millisecond))
}

// A candidate registers its LeaseCandidate with its versions, is elected
// by the controller alone, and withdraws the LeaseCandidate before it
// releases the Lease on shutdown, with an empty holder that the
// controller copes with. It runs as the ServiceAccount of
// examples/deploy/rbac-coordinated.yaml, applied as shipped (only the
// namespace rewritten): no request of the elector may be forbidden.
func TestCandidateLifecycle(t *testing.T) {
	cp, admin, cs := start(t, bench.CoordinatedControlPlane()...)
	api, err := cp.APIServer()
	if err != nil {
		t.Fatal(err)
	}
	pid := api.PID()
	const ns, id = "lifecycle", "pod-a_1"
	m, err := deployyaml.ReadRBAC("rbac-coordinated.yaml")
	if err != nil {
		t.Fatal(err)
	}
	name := m.LeaseName()
	if name == "" {
		t.Fatalf("Role rules %+v: want them scoped to exactly one Lease name", m.Role.Rules)
	}
	if _, err := cs.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := m.Apply(context.Background(), cs, ns); err != nil {
		t.Fatal(err)
	}
	saCfg := rest.CopyConfig(admin)
	saCfg.Impersonate = rest.ImpersonationConfig{UserName: m.User(ns)}
	var forbidden []string
	var fmu sync.Mutex
	saCfg.WrapTransport = func(rt http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(r *http.Request) (*http.Response, error) {
			resp, err := rt.RoundTrip(r)
			if err == nil && resp.StatusCode == http.StatusForbidden {
				fmu.Lock()
				forbidden = append(forbidden, r.Method+" "+r.URL.Path)
				fmu.Unlock()
			}
			return resp, err
		})
	}
	sa := kubernetes.NewForConfigOrDie(saCfg)
	waitAllowed(t, sa, ns, name)
	logs := testkit.NewLogs(t, 0)
	ctx, cancel := context.WithCancel(klog.NewContext(context.Background(), logs.Logger(id)))
	defer cancel()
	var mu sync.Mutex
	var started, returned time.Time
	e, err := leasehold.NewCoordinated(leasehold.Config{
		Lock:            &leasehold.LeaseLock{Namespace: ns, Name: name, Identity: id, Client: sa.CoordinationV1()},
		ReleaseOnCancel: true,
		Callbacks: leasehold.Callbacks{OnStartedLeading: func(ctx context.Context) {
			mu.Lock()
			started = time.Now()
			mu.Unlock()
			<-ctx.Done()
			mu.Lock()
			returned = time.Now()
			mu.Unlock()
		}},
	}, leasehold.CandidateConfig{Client: sa.CoordinationV1beta1(), BinaryVersion: "v1.31.2", EmulationVersion: "1.30.0"})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()

	testkit.Eventually(t, 60*time.Second, "election by the controller", e.IsLeader)
	lc, err := cs.CoordinationV1beta1().LeaseCandidates(ns).Get(ctx, id, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("LeaseCandidate: %v", err)
	}
	if s := lc.Spec; s.LeaseName != name || s.BinaryVersion != "1.31.2" || s.EmulationVersion != "1.30.0" || s.Strategy != "OldestEmulationVersion" {
		t.Fatalf("LeaseCandidate spec %+v", s)
	}
	l, err := cs.CoordinationV1().Leases(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if l.Spec.Strategy == nil || l.Spec.AcquireTime == nil || *l.Spec.LeaseDurationSeconds != 15 {
		t.Fatalf("the controller's Lease was not taken up as leasehold's: %+v", l.Spec)
	}
	if len(logs.Matching("Taking up the term the election controller assigned")) != 1 {
		t.Errorf("take-up not logged once (the log follows)")
	}

	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v", err)
	}
	mu.Lock()
	t.Logf("term: %v long", returned.Sub(started).Round(time.Millisecond))
	mu.Unlock()
	if _, err := cs.CoordinationV1beta1().LeaseCandidates(ns).Get(context.Background(), id, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("the LeaseCandidate is still there after Run returned: %v", err)
	}
	l, err = cs.CoordinationV1().Leases(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity != "" {
		t.Fatalf("released with holderIdentity %v, want \"\"", l.Spec.HolderIdentity)
	}
	time.Sleep(2 * time.Second) // the controller's worker runs every second
	apiServerAlive(t, cp, pid)
	fmu.Lock()
	defer fmu.Unlock()
	if len(forbidden) > 0 {
		t.Errorf("requests forbidden with examples/deploy/rbac-coordinated.yaml: %v", forbidden)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// waitAllowed waits until the RoleBinding has taken effect for sa.
func waitAllowed(t *testing.T, sa kubernetes.Interface, ns, name string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		r, err := sa.AuthorizationV1().SelfSubjectAccessReviews().Create(context.Background(), &authorizationv1.SelfSubjectAccessReview{
			Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &authorizationv1.ResourceAttributes{
				Namespace: ns, Verb: "update", Group: "coordination.k8s.io", Resource: "leasecandidates",
			}},
		}, metav1.CreateOptions{})
		if err == nil && r.Status.Allowed {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the RoleBinding did not take effect in 10s: %v %+v", err, r)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// With default gates the LeaseCandidate API is not served: the elector
// says so in one line and campaigns as a plain one.
func TestFallbackWithDefaultGates(t *testing.T) {
	_, _, cs := start(t)
	took, logs, stop := runUntilLeading(t, cs, "fallback", 10*time.Second)
	t.Logf("led %v after Run", took.Round(time.Millisecond))
	if n := len(logs.Matching("LeaseCandidate API (coordination.k8s.io/v1beta1) is not served")); n != 1 {
		t.Fatalf("the fallback was logged %d times, want once (the log follows)", n)
	}
	stop()
}

// The LeaseCandidate API served while the CoordinatedLeaderElection gate is
// off: no controller will ever name a holder, so the candidate campaigns
// itself once the controller's grace (20s) has passed, and says so.
func TestNoControllerCampaignsAfterGrace(t *testing.T) {
	_, _, cs := start(t, controlplane.WithAPIServerFlag("runtime-config", "coordination.k8s.io/v1beta1=true"))
	took, logs, stop := runUntilLeading(t, cs, "no-controller", 40*time.Second)
	t.Logf("led %v after Run", took.Round(time.Millisecond))
	if took < 19*time.Second {
		t.Fatalf("led after %v: did not leave the Lease to a controller first", took)
	}
	if len(logs.Matching("Registered as a LeaseCandidate")) != 1 || len(logs.Matching("No election controller named a holder")) != 1 {
		t.Fatalf("want one line each of the registration and of the campaign after the grace (the log follows)")
	}
	stop()
}

// runUntilLeading runs a coordinated Elector (identity a, binary 1.31.0)
// for the Lease name until it leads, failing the test after within. It
// returns how long that took, the Elector's log, and stop, which cancels
// Run and fails the test unless Run returns nil.
func runUntilLeading(t *testing.T, cs kubernetes.Interface, name string, within time.Duration) (time.Duration, *testkit.Logs, func()) {
	t.Helper()
	logs := testkit.NewLogs(t, 0)
	ctx, cancel := context.WithCancel(klog.NewContext(context.Background(), logs.Logger("a")))
	t.Cleanup(cancel)
	e, err := leasehold.NewCoordinated(leasehold.Config{
		Lock:      &leasehold.LeaseLock{Namespace: "default", Name: name, Identity: "a", Client: cs.CoordinationV1()},
		Callbacks: leasehold.Callbacks{OnStartedLeading: func(ctx context.Context) { <-ctx.Done() }},
	}, leasehold.CandidateConfig{Client: cs.CoordinationV1beta1(), BinaryVersion: "1.31.0"})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	t0 := time.Now()
	go func() { done <- e.Run(ctx) }()
	testkit.Poller{Every: 5 * time.Millisecond}.Eventually(t, within, "a to lead", e.IsLeader)
	took := time.Since(t0)
	return took, logs, func() {
		t.Helper()
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("Run = %v", err)
		}
	}
}
