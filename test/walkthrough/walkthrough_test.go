package walkthrough

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"

	"github.com/leasehold/leasehold/test/controlplane"
	"github.com/leasehold/leasehold/test/testkit"
)

var (
	cp         *controlplane.ControlPlane
	admin      kubernetes.Interface
	kubeconfig string
	binary     string
)

func TestMain(m *testing.M) { os.Exit(testMain(m)) }

// testMain builds examples/leader-election, then runs the tests on a
// control plane, with a kubeconfig for the example's processes.
func testMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "leasehold-walkthrough-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "FAIL:", err)
		return 1
	}
	defer os.RemoveAll(dir)

	t0 := time.Now()
	if binary, err = BuildExample(dir); err != nil {
		fmt.Fprintln(os.Stderr, "FAIL:", err)
		return 1
	}
	fmt.Fprintf(os.Stderr, "walkthrough: built examples/leader-election in %v\n", time.Since(t0).Round(time.Millisecond))

	return testkit.RunWithControlPlane(m, func(c *controlplane.ControlPlane) error {
		cp, admin = c, kubernetes.NewForConfigOrDie(c.Config())
		kubeconfig = filepath.Join(dir, "kubeconfig")
		return cp.WriteKubeconfig(kubeconfig, nil)
	})
}

// TestWalkthrough is the README walk-through with the README's timings
// (15s/10s/2s) and three real processes of examples/leader-election:
// exactly one leads at a time; SIGINT to the leader hands over through the
// release, in less than a RetryPeriod; SIGKILL to the next hands over only
// once the lease has expired, about LeaseDuration later. The bounds come
// from the timings, with room for a loaded 2-core machine: the README's
// figures (tens of milliseconds) are measured by make demo and make bench.
func TestWalkthrough(t *testing.T) {
	const (
		L = 15 * time.Second
		D = 10 * time.Second
		P = 2 * time.Second
	)
	ns := testkit.Namespace(t, admin, "wt")
	ctx := context.Background()

	logDir := t.TempDir()
	res, err := Run(ctx, Options{
		Binary: binary, Kubeconfig: kubeconfig, Namespace: ns, LeaseName: "example",
		LeaseDuration: L, RenewDeadline: D, RetryPeriod: P,
		Admin: admin, LogDir: logDir, Logf: t.Logf,
	})
	t.Cleanup(func() {
		if t.Failed() {
			for _, e := range res.Events {
				t.Logf("event %s %s", e.At.Format("15:04:05.000000"), e)
			}
			for _, id := range []string{"1", "2", "3"} {
				b, _ := os.ReadFile(filepath.Join(logDir, id+".log"))
				t.Logf("--- stderr of %s ---\n%s", id, b)
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range res.Problems {
		t.Errorf("event line lost: %s", p)
	}
	for _, s := range res.Steps {
		t.Logf("step %-50s %v", s.Name, s.Took.Round(time.Millisecond))
	}

	// Exactly one leader at a time, over the whole run.
	terms := Terms(res.Events, res.Kills)
	if len(terms) != 3 {
		t.Errorf("got %d terms, want 3 (first leader, after SIGINT, after SIGKILL): %+v", len(terms), terms)
	}
	for _, o := range Overlaps(terms) {
		t.Errorf("two leaders at once: %s", o)
	}
	// Each later term starts after the earlier one ended.
	for i := 1; i < len(terms); i++ {
		if gap := terms[i].Start.Sub(terms[i-1].End); gap < 0 {
			t.Errorf("term %d of %s started %v before term %d of %s ended", i, terms[i].ID, -gap, i-1, terms[i-1].ID)
		}
	}

	// SIGINT: the leader stops its work, releases, and another leads
	// after the work stopped, well before the lease could expire (L - P
	// after the last renewal at the earliest) and faster than a follower
	// polling every RetryPeriod would: the release reached it on its watch.
	if res.SecondLeader == res.Interrupted {
		t.Errorf("the interrupted process %s led again", res.Interrupted)
	}
	if h := res.SIGINTHandoff(); h < 0 || h >= P {
		t.Errorf("SIGINT handoff took %v from STOPPED of %s to LEADING of %s, want [0, RetryPeriod %v)", h, res.Interrupted, res.SecondLeader, P)
	}
	if res.ExitAt.Before(res.StoppedAt) {
		t.Errorf("%s exited at %v, before its work stopped at %v", res.Interrupted, res.ExitAt, res.StoppedAt)
	}
	if res.InterruptExit != nil {
		t.Errorf("%s after SIGINT: exit status %v, want 0", res.Interrupted, res.InterruptExit)
	}
	t.Logf("SIGINT handoff: %v from STOPPED to LEADING (%v from the signal)", res.SIGINTHandoff(), res.SIGINTHandoffFromSignal())

	// SIGKILL: nobody takes over before the lease expired. The follower
	// takes over L after it last saw a renewal; the leader renews every P,
	// so the last renewal was sent at most P before the kill: takeover
	// after the kill is at least L - P. It comes soon after expiry: within
	// L + P (the follower saw the last renewal and wrote its takeover
	// within a RetryPeriod, with room for a loaded machine).
	if res.ThirdLeader == res.Killed || res.ThirdLeader == res.Interrupted {
		t.Errorf("after SIGKILL to %s the leader is %s, want the remaining process", res.Killed, res.ThirdLeader)
	}
	if h := res.KillHandoff(); h < L-P || h > L+P {
		t.Errorf("SIGKILL handoff took %v, want within [L-P, L+P] = [%v, %v]", h, L-P, L+P)
	}
	t.Logf("SIGKILL handoff: %v after the kill (LeaseDuration %v)", res.KillHandoff(), L)

	// The Lease: held by the third leader with two transitions (created
	// by the first, taken over twice); released at the end.
	l := res.HeldLease
	if got := ptrStr(l.Spec.HolderIdentity); got != res.ThirdLeader {
		t.Errorf("lease holder %q after the SIGKILL takeover, want %q", got, res.ThirdLeader)
	}
	if l.Spec.LeaseTransitions == nil || *l.Spec.LeaseTransitions != 2 {
		t.Errorf("leaseTransitions %v, want 2", l.Spec.LeaseTransitions)
	}
	if l.Spec.LeaseDurationSeconds == nil || *l.Spec.LeaseDurationSeconds != int32(L/time.Second) {
		t.Errorf("leaseDurationSeconds %v, want %d", l.Spec.LeaseDurationSeconds, int32(L/time.Second))
	}
	if h := ptrStr(res.FinalLease.Spec.HolderIdentity); h != "" {
		t.Errorf("after the last leader's SIGINT the lease is held by %q, want released", h)
	}
	if res.LastExit != nil {
		t.Errorf("last leader %s after SIGINT: exit status %v, want 0", res.ThirdLeader, res.LastExit)
	}
}

func ptrStr(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}
