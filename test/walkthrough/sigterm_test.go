package walkthrough

import (
	"bytes"
	"context"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/leasehold/leasehold/test/testkit"
)

// client-go's leader-election example, migrated (examples/leader-election),
// stopped as Kubernetes stops a pod: SIGTERM. With a work that returns on
// its ctx, the other replica leads again within 1 s and the stopped one
// exits 0. With a work that ignores its ctx (-stuck-work, client-go's
// example's `select {}`), the process exits with status 1 at
// -step-down-timeout, never 0, and the Lease is not released: the other
// replica takes over only once it expired, so the two works never overlap.
func TestSIGTERM(t *testing.T) {
	const (
		L = 15 * time.Second
		D = 10 * time.Second
		P = 2 * time.Second
	)
	for _, stuck := range []bool{false, true} {
		t.Run(fmt.Sprintf("stuck-work=%v", stuck), func(t *testing.T) {
			ns := testkit.Namespace(t, admin, "wt")
			ctx := context.Background()
			tl := NewTimeline()
			stderr := map[string]*bytes.Buffer{}
			start := func(id string, extra ...string) *Process {
				stderr[id] = &bytes.Buffer{}
				args := append([]string{
					"-kubeconfig=" + kubeconfig, "-lease-lock-name=example", "-lease-lock-namespace=" + ns, "-id=" + id,
					"-lease-duration=" + L.String(), "-renew-deadline=" + D.String(), "-retry-period=" + P.String(),
				}, extra...)
				p, err := StartProcess(ProcessOptions{Name: id, Path: binary, Args: args, Stderr: stderr[id], Timeline: tl})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = p.Stop(5 * time.Second) })
				return p
			}
			var extra []string
			if stuck {
				extra = []string{"-stuck-work", "-step-down-timeout=3s"}
			}
			a := start("a", extra...)
			if _, _, err := tl.WaitFor(ctx, 0, 30*time.Second, func(e Event) bool { return e.Kind == "LEADING" && e.Proc == "a" }); err != nil {
				t.Fatalf("a never led: %v\n%s", err, stderr["a"])
			}
			start("b")
			if _, _, err := tl.WaitFor(ctx, 0, 30*time.Second, func(e Event) bool { return e.Kind == "NEWLEADER" && e.Proc == "b" }); err != nil {
				t.Fatalf("b never saw the leader: %v\n%s", err, stderr["b"])
			}
			from := tl.Len()
			sent, err := a.Signal(syscall.SIGTERM)
			if err != nil {
				t.Fatal(err)
			}
			exitErr := a.Wait(30 * time.Second)
			exited := a.ExitTime()
			leading, _, err := tl.WaitFor(ctx, from, 30*time.Second, func(e Event) bool { return e.Kind == "LEADING" && e.Proc == "b" })
			if err != nil {
				t.Fatalf("b never led after a's SIGTERM: %v\n--- a ---\n%s\n--- b ---\n%s", err, stderr["a"], stderr["b"])
			}
			t.Logf("SIGTERM to a: a exited after %v (%v); b led %v after the signal",
				exited.Sub(sent).Round(time.Millisecond), exitStatus(exitErr), leading.At.Sub(sent).Round(time.Millisecond))
			if !stuck {
				if exitErr != nil {
					t.Errorf("a exited with %v after a clean SIGTERM, want status 0\n%s", exitErr, stderr["a"])
				}
				if took := leading.At.Sub(sent); took > time.Second {
					t.Errorf("b led %v after the SIGTERM, want within 1s", took)
				}
				return
			}
			if exitErr == nil {
				t.Errorf("a exited 0 although its work never returned; want status 1 at the step-down timeout\n%s", stderr["a"])
			}
			if took := exited.Sub(sent); took < 3*time.Second || took > 3*time.Second+2*P {
				t.Errorf("a exited %v after the SIGTERM, want at the 3s step-down timeout", took)
			}
			if !bytes.Contains(stderr["a"].Bytes(), []byte("StepDownTimeout")) {
				t.Errorf("a's log does not name the step-down timeout:\n%s", stderr["a"])
			}
			if !leading.At.After(exited) {
				t.Errorf("b led at %v, before a (whose work never returned) exited at %v", leading.At, exited)
			}
		})
	}
}

func exitStatus(err error) string {
	if err == nil {
		return "status 0"
	}
	return err.Error()
}
