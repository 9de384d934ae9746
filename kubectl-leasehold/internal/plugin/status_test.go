package plugin

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"
)

var (
	t0     = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	metaT0 = metav1.NewMicroTime(t0)
)

// fleet is a namespace of Leases in every state status distinguishes.
func fleet() *fake.Clientset {
	moving := newLease("apps", "moving", "a", 10, t0.Add(-800*time.Millisecond), 0)
	moving.Annotations = map[string]string{PreferredHolderAnnotation: "b"}
	moving.Spec.PreferredHolder = ptr.To("c")
	anyone := newLease("apps", "anyone", "a", 15, t0.Add(-3*time.Second), 7)
	anyone.Annotations = map[string]string{PreferredHolderAnnotation: AnyHolder}
	shard := newLease("apps", "web-0", "m1", 15, t0.Add(-2500*time.Millisecond), 0)
	shard.Labels = map[string]string{ShardGroupLabel: "web"}
	skewed := newLease("apps", "skewed", "ahead", 15, t0.Add(2*time.Second), 0)
	skewed.Spec.Strategy = ptr.To(coordinationv1.OldestEmulationVersion)
	return fake.NewClientset(
		newLease("apps", "ctrl", "ctrl-7c9f-1", 15, t0.Add(-1200*time.Millisecond), 3),
		newLease("apps", "old", "gone-1", 15, t0.Add(-40*time.Second), 1),
		newLease("apps", "free", "", 15, t0.Add(-10*time.Minute), 2),
		moving, anyone, shard, skewed,
		newLease("kube-system", "kube-scheduler", "node-1_abc", 15, t0.Add(-time.Second), 0),
	)
}

func TestStatusTable(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{{
		args: []string{"status"},
		want: `
NAME     HOLDER        DURATION   RENEWED                TRANSITIONS   PREFERRED     GROUP
anyone   a             15s        3.0s ago               7             * (anyone)    <none>
ctrl     ctrl-7c9f-1   15s        1.2s ago               3             <none>        <none>
free     <none>        15s        10m ago                2             <none>        <none>
moving   a             10s        800ms ago              0             b, c (spec)   <none>
old      gone-1        15s        40s ago (expired)      1             <none>        <none>
skewed   ahead         15s        in 2.0s (clock skew)   0             <none>        <none>
web-0    m1            15s        2.5s ago               0             <none>        web
`,
	}, {
		args: []string{"status", "ctrl", "-o", "wide"},
		want: `
NAME   HOLDER        DURATION   RENEWED    TRANSITIONS   PREFERRED   ACQUIRED   RENEW TIME                 STRATEGY
ctrl   ctrl-7c9f-1   15s        1.2s ago   3             <none>      5m1s ago   2026-11-25T09:59:58.800Z   <none>
`,
	}, {
		args: []string{"status", "-A", "kube-scheduler"},
		want: `
NAMESPACE     NAME             HOLDER       DURATION   RENEWED    TRANSITIONS   PREFERRED
kube-system   kube-scheduler   node-1_abc   15s        1.0s ago   0             <none>
`,
	}, {
		args: []string{"status", "skewed", "-o", "wide"},
		want: `
NAME     HOLDER   DURATION   RENEWED                TRANSITIONS   PREFERRED   ACQUIRED    RENEW TIME                 STRATEGY
skewed   ahead    15s        in 2.0s (clock skew)   0             <none>      4m58s ago   2026-11-25T10:00:02.000Z   OldestEmulationVersion
`,
	}} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			o, out, errOut := testOptions(fleet(), "apps", fixedClock(t0))
			if err := execute(context.Background(), o, tc.args...); err != nil {
				t.Fatalf("%v: %v", tc.args, err)
			}
			if got, want := out.String(), strings.TrimPrefix(tc.want, "\n"); got != want {
				t.Errorf("%v printed:\n%s\nwant:\n%s", tc.args, got, want)
			}
			if errOut.String() != "" {
				t.Errorf("stderr: %q", errOut)
			}
		})
	}
}

func TestStatusAllNamespacesSortsByNamespace(t *testing.T) {
	o, out, _ := testOptions(fleet(), "apps", fixedClock(t0))
	if err := execute(context.Background(), o, "status", "-A"); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 9 || !strings.HasPrefix(lines[0], "NAMESPACE ") || !strings.HasPrefix(lines[8], "kube-system ") ||
		!strings.HasPrefix(lines[1], "apps          anyone") {
		t.Errorf("status -A printed:\n%s", out)
	}
}

func TestStatusJSON(t *testing.T) {
	o, out, _ := testOptions(fleet(), "apps", fixedClock(t0))
	if err := execute(context.Background(), o, "status", "-o", "json"); err != nil {
		t.Fatal(err)
	}
	var list StatusList
	if err := json.Unmarshal([]byte(out.String()), &list); err != nil {
		t.Fatalf("-o json is not a StatusList: %v\n%s", err, out)
	}
	if len(list.Items) != 7 {
		t.Fatalf("got %d items, want the 7 Leases of apps", len(list.Items))
	}
	byName := map[string]LeaseStatus{}
	for _, s := range list.Items {
		byName[s.Name] = s
	}
	old := byName["old"]
	if old.Holder != "gone-1" || !old.Expired || old.SinceRenewal == nil || old.SinceRenewal.Duration != 40*time.Second ||
		old.LeaseDurationSeconds != 15 || old.Transitions != 1 || !old.ObservedAt.Equal(&metaT0) {
		t.Errorf("old = %+v", old)
	}
	if s := byName["moving"]; s.PreferredHolder != "b" || s.SpecPreferredHolder != "c" || s.Expired {
		t.Errorf("moving = %+v", s)
	}
	if s := byName["web-0"]; s.ShardGroup != "web" {
		t.Errorf("web-0 = %+v", s)
	}
	if s := byName["free"]; s.Holder != "" || s.Expired {
		t.Errorf("a released Lease is not expired: %+v", s)
	}
}

func TestStatusYAMLOfOneLease(t *testing.T) {
	o, out, _ := testOptions(fleet(), "apps", fixedClock(t0))
	if err := execute(context.Background(), o, "status", "anyone", "-o", "yaml"); err != nil {
		t.Fatal(err)
	}
	var s LeaseStatus
	if err := yaml.Unmarshal([]byte(out.String()), &s); err != nil {
		t.Fatalf("-o yaml is not a LeaseStatus: %v\n%s", err, out)
	}
	if s.Name != "anyone" || s.PreferredHolder != AnyHolder || s.Transitions != 7 || s.SinceRenewal.Duration != 3*time.Second {
		t.Errorf("got %+v from\n%s", s, out)
	}
	if !strings.Contains(out.String(), "sinceRenewal: 3s\n") {
		t.Errorf("sinceRenewal should print as a duration:\n%s", out)
	}
}

func TestStatusEmptyNamespace(t *testing.T) {
	o, out, errOut := testOptions(fleet(), "empty", fixedClock(t0))
	if err := execute(context.Background(), o, "status"); err != nil {
		t.Fatal(err)
	}
	if out.String() != "" || errOut.String() != "No Leases found in namespace empty.\n" {
		t.Errorf("stdout %q, stderr %q", out, errOut)
	}
}

func TestStatusBadOutput(t *testing.T) {
	o, _, _ := testOptions(fleet(), "apps", fixedClock(t0))
	err := execute(context.Background(), o, "status", "-o", "table")
	if err == nil || !strings.Contains(err.Error(), `unknown output format "table"`) || !strings.Contains(err.Error(), "-o wide") {
		t.Errorf("err = %v", err)
	}
}

func TestStatusNotFoundSuggestsNamespace(t *testing.T) {
	o, _, _ := testOptions(fleet(), "apps", fixedClock(t0))
	err := execute(context.Background(), o, "status", "kube-scheduler")
	want := `lease "kube-scheduler" not found in namespace "apps"` + "\n" +
		`Fix: a Lease named "kube-scheduler" exists in namespace kube-system: pass -n kube-system.`
	if err == nil || err.Error() != want {
		t.Errorf("err = %v\nwant %s", err, want)
	}

	err = execute(context.Background(), o, "status", "nowhere")
	if err == nil || !strings.Contains(err.Error(), `lease "nowhere" not found in namespace "apps"`) ||
		!strings.Contains(err.Error(), "'kubectl leasehold status -n apps' lists the Leases there") {
		t.Errorf("err = %v", err)
	}

	client := fleet()
	for _, ns := range []string{"team-a", "team-b"} {
		if err := client.Tracker().Add(newLease(ns, "dup", "x", 15, t0, 0)); err != nil {
			t.Fatal(err)
		}
	}
	o2, _, _ := testOptions(client, "apps", fixedClock(t0))
	err = execute(context.Background(), o2, "status", "dup")
	if err == nil || !strings.HasSuffix(err.Error(), `Fix: Leases named "dup" exist in namespaces team-a, team-b: pass -n with one of them.`) {
		t.Errorf("err = %v", err)
	}

	err = execute(context.Background(), o, "status", "-A", "nowhere")
	if err == nil || !strings.Contains(err.Error(), `no Lease named "nowhere" in any namespace`) {
		t.Errorf("err = %v", err)
	}
}

func forbid(client *fake.Clientset, verb string) {
	client.PrependReactor(verb, "leases", func(a k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Group: "coordination.k8s.io", Resource: "leases"}, "",
			errors.New(`User "bob" cannot `+verb+` resource "leases" in API group "coordination.k8s.io" in the namespace "`+a.GetNamespace()+`"`))
	})
}

func TestStatusForbidden(t *testing.T) {
	client := fleet()
	forbid(client, "list")
	forbid(client, "get")
	o, _, _ := testOptions(client, "apps", fixedClock(t0))

	err := execute(context.Background(), o, "status")
	if err == nil || !strings.Contains(err.Error(), `RBAC forbids you to list Leases in namespace "apps"`) ||
		!strings.Contains(err.Error(), `User "bob" cannot list`) ||
		!strings.Contains(err.Error(), `Fix: ask for a Role in namespace apps granting "list" on leases (apiGroups: [coordination.k8s.io]); check with 'kubectl auth can-i list leases.coordination.k8s.io -n apps'`) {
		t.Errorf("err = %v", err)
	}
	if !apierrors.IsForbidden(err) {
		t.Errorf("the error should wrap the API error: %v", err)
	}

	err = execute(context.Background(), o, "status", "-A")
	if err == nil || !strings.Contains(err.Error(), "in all namespaces") || !strings.Contains(err.Error(), "a ClusterRole") ||
		!strings.Contains(err.Error(), "kubectl auth can-i list leases.coordination.k8s.io -A") {
		t.Errorf("err = %v", err)
	}

	err = execute(context.Background(), o, "status", "ctrl")
	if err == nil || !strings.Contains(err.Error(), `RBAC forbids you to get Leases in namespace "apps"`) {
		t.Errorf("err = %v", err)
	}
}

const kubeconfigTwoContexts = `apiVersion: v1
kind: Config
clusters:
- name: c
  cluster: {server: "https://127.0.0.1:1"}
users:
- name: u
  user: {token: t}
contexts:
- name: prod
  context: {cluster: c, user: u, namespace: team-a}
- name: dev
  context: {cluster: c, user: u}
current-context: prod
`

// TestContextErrors goes through the real kubeconfig flags.
func TestContextErrors(t *testing.T) {
	dir := t.TempDir()
	kc := filepath.Join(dir, "config")
	if err := os.WriteFile(kc, []byte(kubeconfigTwoContexts), 0o600); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) (string, error) {
		out := &syncBuffer{}
		cmd := NewCommand(genericiooptions.IOStreams{Out: out, ErrOut: out})
		cmd.SetArgs(args)
		err := cmd.ExecuteContext(context.Background())
		return out.String(), err
	}

	_, err := run("status", "--kubeconfig", kc, "--context", "staging")
	want := `context "staging" does not exist in the kubeconfig (` + kc + `)` + "\n" +
		`Fix: pass --context with one of: dev, prod (list them with 'kubectl config get-contexts').`
	if err == nil || err.Error() != want {
		t.Errorf("err = %v\nwant %s", err, want)
	}

	// The context's namespace is used; the server is not reachable.
	_, err = run("status", "--kubeconfig", kc, "--request-timeout", "2s")
	if err == nil || !strings.Contains(err.Error(), "cannot reach the API server") || !strings.Contains(err.Error(), "Fix: check that the cluster is up") {
		t.Errorf("err = %v", err)
	}

	_, err = run("status", "--kubeconfig", filepath.Join(dir, "absent"))
	if err == nil || !strings.Contains(err.Error(), "no such file or directory") || !strings.Contains(err.Error(), "Fix: point --kubeconfig (or KUBECONFIG) at an existing file") {
		t.Errorf("err = %v", err)
	}

	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	_, err = run("status", "--kubeconfig", empty)
	if err == nil || !strings.Contains(err.Error(), "no kubeconfig found") || !strings.Contains(err.Error(), "Fix: set KUBECONFIG or pass --kubeconfig") {
		t.Errorf("err = %v", err)
	}
}

func TestRequestedHolder(t *testing.T) {
	for _, tc := range []struct {
		annotations map[string]string
		want        string
	}{
		{nil, ""},
		{map[string]string{"other": "x"}, ""},
		{map[string]string{PreferredHolderAnnotation: "b"}, "b"},
		{map[string]string{PreferredHolderAnnotation: " b "}, "b"},
		{map[string]string{PreferredHolderAnnotation: "*"}, AnyHolder},
		{map[string]string{PreferredHolderAnnotation: ""}, AnyHolder}, // as leasehold reads it
	} {
		l := newLease("apps", "ctrl", "a", 15, t0, 0)
		l.Annotations = tc.annotations
		if got := requestedHolder(l); got != tc.want {
			t.Errorf("requestedHolder(%v) = %q, want %q", tc.annotations, got, tc.want)
		}
	}
}
