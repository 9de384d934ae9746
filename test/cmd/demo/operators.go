package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/leasehold/leasehold/test/walkthrough"
)

// operatorsView shows leadership as an operator sees it, through a real
// kubectl built from the pinned Kubernetes and the kubectl-leasehold
// plugin found by kubectl's plugin discovery on PATH: two processes on a
// second Lease, `kubectl get` and `describe` (with the events the
// example's EventRecorder posts), `kubectl leasehold status`, a `yield`
// to the follower, and the status after it.
func operatorsView(ctx context.Context, root, dir, kubectlDir, bin, kubeconfig string) error {
	kubectl := filepath.Join(kubectlDir, "kubectl")
	if _, err := os.Stat(kubectl); err != nil {
		return fmt.Errorf("no kubectl at %s: run 'make kubectl' (make demo does)", kubectl)
	}
	plugins := filepath.Join(dir, "plugins")
	if _, err := walkthrough.Build(filepath.Join(root, "kubectl-leasehold"), ".", filepath.Join(plugins, "kubectl-leasehold")); err != nil {
		return fmt.Errorf("build kubectl-leasehold: %w", err)
	}
	env := append(os.Environ(), "PATH="+plugins+string(os.PathListSeparator)+os.Getenv("PATH"), "KUBECONFIG="+kubeconfig)

	tl := walkthrough.NewTimeline()
	var procs []*walkthrough.Process
	defer func() {
		for _, p := range procs {
			_, _ = p.Signal(syscall.SIGKILL)
		}
	}()
	for _, id := range []string{"4", "5"} {
		logf, err := os.Create(filepath.Join(dir, "logs", id+".log"))
		if err != nil {
			return err
		}
		defer logf.Close()
		p, err := walkthrough.StartProcess(walkthrough.ProcessOptions{
			Name: id, Path: bin, Stderr: logf, Timeline: tl,
			Args: []string{"-kubeconfig=" + kubeconfig, "-lease-lock-name=operated", "-lease-lock-namespace=default", "-id=" + id},
		})
		if err != nil {
			return err
		}
		procs = append(procs, p)
	}
	lead, _, err := tl.WaitFor(ctx, 0, time.Minute, func(e walkthrough.Event) bool { return e.Kind == "LEADING" })
	if err != nil {
		return fmt.Errorf("no leader on Lease operated: %w", err)
	}
	follower := "4"
	if lead.Proc == "4" {
		follower = "5"
	}
	// Let the follower see the leader, and a renewal or two happen.
	if _, _, err := tl.WaitFor(ctx, 0, time.Minute, func(e walkthrough.Event) bool { return e.Kind == "NEWLEADER" && e.Proc == follower }); err != nil {
		return err
	}
	time.Sleep(3 * time.Second)

	run := func(args ...string) error {
		fmt.Printf("\n$ kubectl %s\n", strings.Join(args, " "))
		cmd := exec.CommandContext(ctx, kubectl, args...)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		fmt.Print(string(out))
		if err != nil {
			return fmt.Errorf("kubectl %s: %w", strings.Join(args, " "), err)
		}
		return nil
	}
	for _, args := range [][]string{
		{"get", "lease", "operated"},
		{"describe", "lease", "operated"},
		{"leasehold", "status"},
		{"leasehold", "yield", "operated", "--to", follower},
		{"leasehold", "status", "operated"},
	} {
		if err := run(args...); err != nil {
			return err
		}
	}
	// The yielder's Run returned nil (the example runs without Rejoin), so
	// it has exited already: a signal to it fails, and its EXIT is there.
	for _, p := range procs {
		_, _ = p.Interrupt()
	}
	for _, p := range procs {
		id := p.Name
		if _, _, err := tl.WaitFor(ctx, 0, 30*time.Second, func(e walkthrough.Event) bool { return e.Kind == "EXIT" && e.Proc == id }); err != nil {
			return fmt.Errorf("%s did not exit after SIGINT: %w", id, err)
		}
	}
	return nil
}
