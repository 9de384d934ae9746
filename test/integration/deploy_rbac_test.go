package integration

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/leasehold/leasehold/test/deployyaml"
	"github.com/leasehold/leasehold/test/testkit"
)

// TestDeployRBAC applies examples/deploy/rbac.yaml as shipped (only the
// namespace rewritten) and runs two electors as its ServiceAccount, by
// impersonation as a pod's token would: they must create, renew, release
// and hand over the Lease the Role names, with no request forbidden, the
// follower learning of the release through its watch.
func TestDeployRBAC(t *testing.T) {
	ctx := context.Background()
	m, err := deployyaml.ReadRBAC("rbac.yaml")
	if err != nil {
		t.Fatal(err)
	}
	ns := newNamespace(t)

	// The Role must name exactly one Lease: the one the example campaigns for.
	name := m.LeaseName()
	if name == "" {
		t.Fatalf("Role rules %+v: want them scoped to exactly one Lease name", m.Role.Rules)
	}

	// Impersonate the ServiceAccount with the admin's credentials.
	saUser := m.User(ns)
	saCfg := rest.CopyConfig(cp.Config())
	saCfg.Impersonate = rest.ImpersonationConfig{UserName: saUser}
	saClient := kubernetes.NewForConfigOrDie(saCfg)

	// Before the manifest is applied the ServiceAccount may do nothing.
	if _, err := saClient.CoordinationV1().Leases(ns).Get(ctx, name, metav1.GetOptions{}); !apierrors.IsForbidden(err) {
		t.Fatalf("unbound %s: GET lease answered %v, want 403 Forbidden", saUser, err)
	}
	testkit.Must(t, m.Apply(ctx, admin, ns))
	testkit.Eventually(t, 10*time.Second, "the RoleBinding to take effect", func() bool {
		r, err := saClient.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, &authorizationv1.SelfSubjectAccessReview{
			Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &authorizationv1.ResourceAttributes{
				Namespace: ns, Verb: "update", Group: "coordination.k8s.io", Resource: "leases", Name: name,
			}},
		}, metav1.CreateOptions{})
		return err == nil && r.Status.Allowed
	})
	// And only what it grants: no other Lease may be read.
	if _, err := saClient.CoordinationV1().Leases(ns).Get(ctx, name+"-other", metav1.GetOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("%s: GET of another lease answered %v, want 403 Forbidden", saUser, err)
	}

	tr, logs := testkit.NewTracker(), testkit.NewLogs(t, 4)
	a := startCandidate(t, candidateOpts{id: "pod-a", ns: ns, name: name, t: std, release: true, tr: tr, logs: logs, cfg: saCfg})
	first := tr.NextStart(t, 10*time.Second)
	if first.ID != a.id {
		t.Fatalf("%s led; want %s", first.ID, a.id)
	}
	b := startCandidate(t, candidateOpts{id: "pod-b", ns: ns, name: name, t: std, release: true, tr: tr, logs: logs, cfg: saCfg})
	leader, follower := a, b

	renewed := func(c testkit.Call) bool { return c.OK() && c.Holder == leader.id }
	testkit.Eventually(t, 10*std.P, "three renewals", func() bool { return leader.rec.Count("update", time.Time{}, renewed) >= 3 })
	testkit.Eventually(t, 5*time.Second, "the follower's watch", func() bool {
		return follower.rec.Count("watch", time.Time{}, func(c testkit.Call) bool { return c.OK() }) >= 1
	})
	follower.waitSees(t, leader.id, 5*time.Second)

	cancelled := time.Now()
	leader.Cancel()
	next := tr.NextStart(t, 5*time.Second)
	testkit.Must(t, leader.Wait(t, 5*time.Second))
	if next.ID != follower.id {
		t.Fatalf("%s started after %s released; want %s", next.ID, leader.id, follower.id)
	}
	handoff := next.At.Sub(cancelled)
	var releases []testkit.Call
	for _, c := range leader.rec.All() {
		if !c.Sent.Before(cancelled) && c.OK() && c.Verb == "update" && c.HasBody && c.Holder == "" {
			releases = append(releases, c)
		}
	}
	if len(releases) != 1 {
		t.Fatalf("%s: %d successful releasing updates after cancel, want 1", leader.id, len(releases))
	}
	// The follower took over from the release, which reached it on its
	// watch: no read, and sooner than any expiry.
	checkReleaseHandoff(t, follower.id, next.At.Sub(releases[0].Sent), std, follower.rec, cancelled)
	testkit.Must(t, follower.stop(t))
	if l := testkit.GetLease(t, admin, ns, name); testkit.Holder(l) != "" {
		t.Errorf("after both released, Lease held by %q", testkit.Holder(l))
	}
	t.Logf("handoff %v after the leader was cancelled", handoff.Round(time.Millisecond))

	for _, c := range []*candidate{a, b} {
		for _, cl := range c.rec.All() {
			if cl.Status == http.StatusForbidden {
				t.Errorf("%s: %s %s/%s forbidden with examples/deploy/rbac.yaml", c.id, cl.Verb, cl.Resource, cl.Name)
			}
		}
		t.Logf("%s: lease requests %v", c.id, c.rec.Verbs(time.Time{}))
	}
	if w := logs.Matching("falling back to polling"); len(w) > 0 {
		t.Errorf("an elector fell back to polling: %v", w)
	}
	tr.Check(t)

	// No credential of any config in play may reach the logs.
	all := logs.Matching()
	if len(all) == 0 {
		t.Fatal("no log lines captured")
	}
	for _, cfg := range []*rest.Config{cp.Config(), saCfg} {
		secrets := map[string]string{
			"bearer token": cfg.BearerToken,
			"client key":   string(cfg.KeyData),
			"client cert":  string(cfg.CertData),
			"password":     cfg.Password,
		}
		for what, s := range secrets {
			if s == "" {
				continue
			}
			for _, l := range all {
				if strings.Contains(l, s) {
					t.Errorf("log line contains the %s: %.200s", what, l)
				}
			}
		}
	}
	for _, l := range all {
		if strings.Contains(l, "BEGIN") {
			t.Errorf("log line contains a PEM marker: %.200s", l)
		}
	}
	t.Logf("%d log lines checked for credentials", len(all))
}
