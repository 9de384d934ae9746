package kubectlplugin

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr"
	authorizationv1 "k8s.io/api/authorization/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"

	"github.com/leasehold/leasehold"
	"github.com/leasehold/leasehold/shard"
	"github.com/leasehold/leasehold/test/testkit"
)

// preferredHolderAnnotation is leasehold.PreferredHolderAnnotation, spelt
// out: the tests check the plugin writes exactly this.
const preferredHolderAnnotation = "leasehold.dev/preferred-holder"

// newNamespace creates a namespace for one test, deleted when it ends.
func newNamespace(t *testing.T) string { return testkit.Namespace(t, admin, "kp") }

// syncBuffer collects a process's output while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type result struct {
	stdout, stderr string
	code           int
}

// kubectl runs the real kubectl with args (as the admin unless args say
// otherwise) and returns what it printed and its exit code.
func kubectl(t *testing.T, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, kubectlBin, args...)
	cmd.Env = pluginEnv
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errOut.String()}
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		r.code = exit.ExitCode()
	case err != nil:
		t.Fatalf("kubectl %s: %v", strings.Join(args, " "), err)
	}
	t.Logf("$ kubectl %s   (exit %d)\n%s%s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	return r
}

// mustKubectl is kubectl that fails the test on a non-zero exit.
func mustKubectl(t *testing.T, args ...string) string {
	t.Helper()
	r := kubectl(t, args...)
	if r.code != 0 {
		t.Fatalf("kubectl %s exited %d:\n%s%s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

// process is a kubectl running in the background.
type process struct {
	cmd         *exec.Cmd
	out, errOut *syncBuffer
	done        chan struct{}
	err         error
}

func startKubectl(t *testing.T, args ...string) *process {
	t.Helper()
	p := &process{cmd: exec.Command(kubectlBin, args...), out: &syncBuffer{}, errOut: &syncBuffer{}, done: make(chan struct{})}
	p.cmd.Env = pluginEnv
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.errOut
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
	})
	return p
}

// waitOutput waits until the process printed s.
func (p *process) waitOutput(t *testing.T, s string, within time.Duration) {
	t.Helper()
	testkit.Eventually(t, within, fmt.Sprintf("kubectl to print %q", s), func() bool { return strings.Contains(p.out.String(), s) })
}

// interrupt sends SIGINT, as Ctrl-C does, and waits for the exit.
func (p *process) interrupt(t *testing.T) error {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.done:
		return p.err
	case <-time.After(10 * time.Second):
		t.Fatalf("kubectl did not exit within 10s of SIGINT; printed:\n%s%s", p.out, p.errOut)
		return nil
	}
}

// waitHolder waits until the Lease is held by id.
func waitHolder(t *testing.T, ns, name, id string, within time.Duration) {
	t.Helper()
	testkit.Eventually(t, within, fmt.Sprintf("%s to hold %s/%s", id, ns, name), func() bool {
		l, err := admin.CoordinationV1().Leases(ns).Get(context.Background(), name, metav1.GetOptions{})
		return err == nil && testkit.Holder(l) == id
	})
}

// elector is a leasehold or client-go elector running in this process
// until stopped or the test ends.
type elector struct{ *testkit.Background }

func (e *elector) stop(t *testing.T) {
	t.Helper()
	_ = e.Stop(t, 15*time.Second)
}

func newElector(t *testing.T, id string, run func(ctx context.Context)) *elector {
	t.Helper()
	return &elector{testkit.Go(t, klog.NewContext(context.Background(), logr.Discard()), id, 15*time.Second, func(ctx context.Context) error {
		run(ctx)
		return nil
	})}
}

// startLeasehold runs a leasehold elector (LeaseDuration 3s, RenewDeadline
// 2s, RetryPeriod 500ms) with ReleaseOnCancel, whose work waits for its
// ctx.
func startLeasehold(t *testing.T, ns, name, id string) *elector {
	t.Helper()
	cfg := leasehold.WithRequestTimeout(cp.Config(), 2*time.Second)
	el, err := leasehold.New(leasehold.Config{
		Lock: &leasehold.LeaseLock{
			Namespace: ns, Name: name, Identity: id,
			Client: kubernetes.NewForConfigOrDie(cfg).CoordinationV1(),
		},
		LeaseDuration:   3 * time.Second,
		RenewDeadline:   2 * time.Second,
		RetryPeriod:     500 * time.Millisecond,
		ReleaseOnCancel: true,
		Callbacks: leasehold.Callbacks{
			OnStartedLeading: func(ctx context.Context) { <-ctx.Done() },
		},
	})
	if err != nil {
		t.Fatalf("leasehold.New(%s): %v", id, err)
	}
	return newElector(t, id, func(ctx context.Context) {
		if err := el.Run(ctx); err != nil {
			t.Errorf("%s: Run: %v", id, err)
		}
	})
}

// startClientGo runs a client-go leaderelection elector (3s/2s/1s: client-go
// compares renewTime in whole seconds, so it needs RetryPeriod >= 1s) with
// ReleaseOnCancel.
func startClientGo(t *testing.T, ns, name, id string) *elector {
	t.Helper()
	le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock: &resourcelock.LeaseLock{
			LeaseMeta:  metav1.ObjectMeta{Namespace: ns, Name: name},
			Client:     kubernetes.NewForConfigOrDie(cp.Config()).CoordinationV1(),
			LockConfig: resourcelock.ResourceLockConfig{Identity: id},
		},
		LeaseDuration:   3 * time.Second,
		RenewDeadline:   2 * time.Second,
		RetryPeriod:     time.Second,
		ReleaseOnCancel: true,
		Name:            id,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(ctx context.Context) { <-ctx.Done() },
			OnStoppedLeading: func() {},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return newElector(t, id, le.Run)
}

// writeLease creates a Lease held by holderID, as any other writer would.
func writeLease(t *testing.T, ns, name, holderID string, labels map[string]string) *coordinationv1.Lease {
	t.Helper()
	now := metav1.NewMicroTime(time.Now())
	l, err := admin.CoordinationV1().Leases(ns).Create(context.Background(), &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
		Spec: coordinationv1.LeaseSpec{
			HolderIdentity:       ptr.To(holderID),
			LeaseDurationSeconds: ptr.To[int32](15),
			AcquireTime:          &now,
			RenewTime:            &now,
			LeaseTransitions:     ptr.To[int32](0),
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// userKubeconfig makes a user bound to a Role with verbs on leases in ns
// (no binding if verbs is empty) and returns a kubeconfig file for it.
func userKubeconfig(t *testing.T, ns, user string, verbs ...string) string {
	t.Helper()
	ctx := context.Background()
	cfg, err := cp.AddUser(user, nil)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), user+".kubeconfig")
	if err := cp.WriteKubeconfig(path, cfg); err != nil {
		t.Fatal(err)
	}
	if len(verbs) == 0 {
		return path
	}
	role := &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: user},
		Rules:      []rbacv1.PolicyRule{{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, Verbs: verbs}},
	}
	if _, err := admin.RbacV1().Roles(ns).Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.RbacV1().RoleBindings(ns).Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: user},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: user},
		Subjects:   []rbacv1.Subject{{APIGroup: "rbac.authorization.k8s.io", Kind: "User", Name: user}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	cs := kubernetes.NewForConfigOrDie(cfg)
	testkit.Eventually(t, 10*time.Second, "the RoleBinding to take effect", func() bool {
		r, err := cs.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, &authorizationv1.SelfSubjectAccessReview{
			Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &authorizationv1.ResourceAttributes{
				Namespace: ns, Verb: verbs[0], Group: "coordination.k8s.io", Resource: "leases",
			}},
		}, metav1.CreateOptions{})
		return err == nil && r.Status.Allowed
	})
	return path
}

// tableRow returns the fields of the row of a status table whose first
// fields are prefix.
func tableRow(t *testing.T, table string, prefix ...string) []string {
	t.Helper()
	for _, line := range strings.Split(table, "\n") {
		f := strings.Fields(line)
		if len(f) >= len(prefix) && strings.Join(f[:len(prefix)], " ") == strings.Join(prefix, " ") {
			return f
		}
	}
	t.Fatalf("no row %q in:\n%s", prefix, table)
	return nil
}

// startShardMember runs a member of a shard group (3s/2s/500ms), whose
// shards' work waits for its ctx.
func startShardMember(t *testing.T, ns, group, id string, shards int) *elector {
	t.Helper()
	cfg := leasehold.WithRequestTimeout(cp.Config(), 2*time.Second)
	m, err := shard.New(shard.Config{
		Namespace: ns, Group: group, Identity: id,
		Client: kubernetes.NewForConfigOrDie(cfg).CoordinationV1(),
		Shards: shards, LeaseDuration: 3 * time.Second, RenewDeadline: 2 * time.Second, RetryPeriod: 500 * time.Millisecond,
		ReleaseOnCancel: true,
		OnShardStarted:  func(ctx context.Context, _ int) { <-ctx.Done() },
	})
	if err != nil {
		t.Fatalf("shard.New(%s): %v", id, err)
	}
	return newElector(t, id, func(ctx context.Context) {
		if err := m.Run(ctx); err != nil {
			t.Errorf("%s: Run: %v", id, err)
		}
	})
}

// leaseStatus is the part of `status -o json` the tests read.
type leaseStatus struct {
	Namespace            string `json:"namespace"`
	Name                 string `json:"name"`
	Holder               string `json:"holder"`
	LeaseDurationSeconds int32  `json:"leaseDurationSeconds"`
	SinceRenewal         string `json:"sinceRenewal"`
	Expired              bool   `json:"expired"`
	Transitions          int32  `json:"leaseTransitions"`
	PreferredHolder      string `json:"preferredHolder"`
	ShardGroup           string `json:"shardGroup"`
	ResourceVersion      string `json:"resourceVersion"`
	ShardAssignment      *struct {
		Shards  int `json:"shards"`
		Members []struct {
			Identity   string `json:"identity"`
			Owned      []int  `json:"owned"`
			Membership string `json:"membership"`
		} `json:"members"`
	} `json:"shardAssignment"`
}
