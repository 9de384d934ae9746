package integration

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"

	"github.com/leasehold/leasehold"
	"github.com/leasehold/leasehold/test/testkit"
)

// electorRole is the Role the README documents: get, update and watch on
// the one Lease (by name), and create on leases (create cannot be scoped
// by name). without drops verbs from the first rule.
func electorRole(ns, lease string, without ...string) *rbacv1.Role {
	var verbs []string
	for _, v := range []string{"get", "update", "watch"} {
		drop := false
		for _, w := range without {
			drop = drop || v == w
		}
		if !drop {
			verbs = append(verbs, v)
		}
	}
	return &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "leasehold-elector"},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, ResourceNames: []string{lease}, Verbs: verbs},
			{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, Verbs: []string{"create"}},
		},
	}
}

// rbacUser creates a user bound to role in its namespace, waits until the
// authorizer applies the binding, and returns the user's config.
func rbacUser(t *testing.T, user string, role *rbacv1.Role) *rest.Config {
	t.Helper()
	ctx := context.Background()
	cfg, err := cp.AddUser(user, nil)
	if err != nil {
		t.Fatal(err)
	}
	ns, lease := role.Namespace, role.Rules[0].ResourceNames[0]
	cs := kubernetes.NewForConfigOrDie(cfg)

	// RBAC is on: without a binding the user may not even read the Lease.
	if _, err := cs.CoordinationV1().Leases(ns).Get(ctx, lease, metav1.GetOptions{}); !apierrors.IsForbidden(err) {
		t.Fatalf("unbound user %s: GET lease answered %v, want 403 Forbidden (is RBAC on?)", user, err)
	}
	if _, err := admin.RbacV1().Roles(ns).Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	binding := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: role.Name},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: role.Name},
		Subjects:   []rbacv1.Subject{{APIGroup: "rbac.authorization.k8s.io", Kind: "User", Name: user}},
	}
	if _, err := admin.RbacV1().RoleBindings(ns).Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// The authorizer reads roles through an informer: wait until it
	// grants the role's first verb.
	testkit.Eventually(t, 10*time.Second, "the RoleBinding to take effect", func() bool {
		r, err := cs.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, &authorizationv1.SelfSubjectAccessReview{
			Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &authorizationv1.ResourceAttributes{
				Namespace: ns, Verb: role.Rules[0].Verbs[0], Group: "coordination.k8s.io", Resource: "leases", Name: lease,
			}},
		}, metav1.CreateOptions{})
		return err == nil && r.Status.Allowed
	})
	return cfg
}

func TestRBAC(t *testing.T) {
	// The documented Role: election works (create, renew, release) with
	// no request forbidden, and followers watch.
	t.Run("DocumentedRole", func(t *testing.T) {
		ns, name := newNamespace(t), "elector"
		cfg := rbacUser(t, "elector-documented", electorRole(ns, name))
		tr, logs := testkit.NewTracker(), testkit.NewLogs(t, 4)
		a := startCandidate(t, candidateOpts{id: "a", ns: ns, name: name, t: std, release: true, tr: tr, logs: logs, cfg: cfg})
		b := startCandidate(t, candidateOpts{id: "b", ns: ns, name: name, t: std, release: true, tr: tr, logs: logs, cfg: cfg})
		byID := map[string]*candidate{"a": a, "b": b}
		first := tr.NextStart(t, 10*time.Second)
		leader, follower := byID[first.ID], byID[map[string]string{"a": "b", "b": "a"}[first.ID]]

		renewed := func(c testkit.Call) bool { return c.OK() && c.Holder == leader.id }
		testkit.Eventually(t, 10*std.P, "three renewals", func() bool { return leader.rec.Count("update", time.Time{}, renewed) >= 3 })
		testkit.Eventually(t, 5*time.Second, "the follower's watch", func() bool {
			return follower.rec.Count("watch", time.Time{}, func(c testkit.Call) bool { return c.OK() }) >= 1
		})
		leader.Cancel()
		next := tr.NextStart(t, 5*time.Second)
		testkit.Must(t, leader.Wait(t, 5*time.Second))
		if next.ID != follower.id {
			t.Fatalf("%s started after %s released; want %s", next.ID, leader.id, follower.id)
		}
		testkit.Must(t, follower.stop(t))
		if l := testkit.GetLease(t, admin, ns, name); testkit.Holder(l) != "" {
			t.Errorf("after both released, Lease held by %q", testkit.Holder(l))
		}
		for _, c := range []*candidate{a, b} {
			for _, cl := range c.rec.All() {
				if cl.Status == http.StatusForbidden {
					t.Errorf("%s: %s %s forbidden with the documented Role", c.id, cl.Verb, cl.Name)
				}
			}
			t.Logf("%s: lease requests %v", c.id, c.rec.Verbs(time.Time{}))
		}
		tr.Check(t)
	})

	// Without watch: one warning, then polling; the election still works
	// and a release is picked up by the next poll.
	t.Run("WithoutWatch", func(t *testing.T) {
		ns, name := newNamespace(t), "elector"
		cfg := rbacUser(t, "elector-nowatch", electorRole(ns, name, "watch"))
		tr, logs := testkit.NewTracker(), testkit.NewLogs(t, 4)
		a := startCandidate(t, candidateOpts{id: "a", ns: ns, name: name, t: std, release: true, tr: tr, logs: logs, cfg: cfg})
		b := startCandidate(t, candidateOpts{id: "b", ns: ns, name: name, t: std, release: true, tr: tr, logs: logs, cfg: cfg})
		byID := map[string]*candidate{"a": a, "b": b}
		first := tr.NextStart(t, 10*time.Second)
		leader, follower := byID[first.ID], byID[map[string]string{"a": "b", "b": "a"}[first.ID]]

		warned := func(id string) []string {
			return logs.Matching(`"identity"="`+id+`"`, "Watch on the lease is not allowed; falling back to polling")
		}
		testkit.Eventually(t, 5*time.Second, "both electors to fall back to polling", func() bool {
			return len(warned("a")) > 0 && len(warned("b")) > 0
		})
		from := time.Now()
		tr.NoStart(t, 6*std.P, leader.id+" holds the lease")
		for _, c := range []*candidate{a, b} {
			tried := c.rec.Count("watch", time.Time{}, nil)
			opened := c.rec.Count("watch", time.Time{}, func(c testkit.Call) bool { return c.Status != http.StatusForbidden })
			if tried == 0 || opened != 0 {
				t.Errorf("%s: %d watch requests, %d not forbidden; want at least 1, all forbidden", c.id, tried, opened)
			}
			if w := c.rec.Count("watch", from, nil); w != 0 {
				t.Errorf("%s: tried to watch again %d times after falling back to polling", c.id, w)
			}
			if warnings := warned(c.id); len(warnings) != 1 {
				t.Errorf("%s: the polling warning was logged %d times, want exactly once: %v", c.id, len(warnings), warnings)
			}
		}
		gets := follower.rec.Count("get", from, func(c testkit.Call) bool { return c.OK() })
		if gets < 3 {
			t.Errorf("polling follower made %d GETs in %v, want about one per RetryPeriod (%v)", gets, 6*std.P, std.P)
		}
		t.Logf("polling follower: %d GETs in %v (RetryPeriod %v)", gets, 6*std.P, std.P)

		cancelled := time.Now()
		leader.Cancel()
		next := tr.NextStart(t, 2*std.P+3*time.Second)
		testkit.Must(t, leader.Wait(t, 5*time.Second))
		if next.ID != follower.id {
			t.Fatalf("%s started after %s released; want %s", next.ID, leader.id, follower.id)
		}
		t.Logf("polling follower took over %v after the leader was cancelled", next.At.Sub(cancelled).Round(time.Millisecond))
		testkit.Must(t, follower.stop(t))
		tr.Check(t)
	})

	// Without update, on a Lease that exists: every takeover is forbidden.
	// The elector keeps retrying and never leads; Run does not return. The
	// cause is logged at once, and Check reports it (ErrForbidden, naming
	// the verb) once every write has been forbidden for LeaseDuration plus
	// the tolerance, not before.
	t.Run("WithoutUpdate", func(t *testing.T) {
		ns, name := newNamespace(t), "elector"
		cfg := rbacUser(t, "elector-noupdate", electorRole(ns, name, "update"))
		tr, logs := testkit.NewTracker(), testkit.NewLogs(t, 4)
		// A released Lease: anyone may take it at once.
		if _, err := admin.CoordinationV1().Leases(ns).Create(context.Background(), &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec:       coordinationv1.LeaseSpec{LeaseDurationSeconds: ptr.To[int32](3), LeaseTransitions: ptr.To[int32](0)},
		}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		c := startCandidate(t, candidateOpts{id: "c", ns: ns, name: name, t: std, release: true, tr: tr, logs: logs, cfg: cfg})
		tr.NoStart(t, 6*std.P, "RBAC forbids update")
		forbidden := c.rec.Count("update", time.Time{}, func(c testkit.Call) bool { return c.Status == http.StatusForbidden })
		if forbidden < 2 {
			t.Errorf("%d forbidden takeover attempts, want retries (at least 2)", forbidden)
		}
		lines := logs.Matching(`"error"="`, `RBAC forbids \"update\"`)
		if len(lines) == 0 {
			t.Errorf(`no error logged with "RBAC forbids \"update\""`)
		} else {
			t.Logf("%d forbidden attempts; logged once at error level: %s", forbidden, lines[0])
		}
		select {
		case <-c.Done():
			t.Errorf("Run returned %v; the elector should keep retrying", c.Err())
		default:
		}
		var firstDenied testkit.Call
		for _, cl := range c.rec.All() {
			if cl.Verb == "update" && cl.Status == http.StatusForbidden {
				firstDenied = cl
				break
			}
		}
		tolerance := std.P
		var checkErr error
		var checkedAt time.Time
		testkit.Eventually(t, std.L+tolerance+10*time.Second, "Check to report the forbidden writes", func() bool {
			checkErr, checkedAt = c.el.Check(tolerance), time.Now()
			return checkErr != nil
		})
		if !errors.Is(checkErr, leasehold.ErrForbidden) || !strings.Contains(checkErr.Error(), `"update"`) {
			t.Errorf("Check = %v, want ErrForbidden naming \"update\"", checkErr)
		}
		// Writes were forbidden from the first denied update at the
		// earliest: a failure sooner than L + tolerance after it is early.
		if since := checkedAt.Sub(firstDenied.Sent); since <= std.L+tolerance {
			t.Errorf("Check failed %v after the first forbidden write, before LeaseDuration+tolerance (%v)", since, std.L+tolerance)
		}
		t.Logf("Check: %v", checkErr)
		testkit.Must(t, c.stop(t))
		tr.Check(t)
	})

	// Without update, on a missing Lease: create is allowed, so it leads,
	// then cannot renew and loses the lease at the renew deadline.
	t.Run("WithoutUpdateCreates", func(t *testing.T) {
		ns, name := newNamespace(t), "elector"
		cfg := rbacUser(t, "elector-noupdate-create", electorRole(ns, name, "update"))
		tr, logs := testkit.NewTracker(), testkit.NewLogs(t, 4)
		c := startCandidate(t, candidateOpts{id: "c", ns: ns, name: name, t: std, release: true, tr: tr, logs: logs, cfg: cfg})
		start := tr.NextStart(t, 10*time.Second)
		err := c.Wait(t, std.D+std.L+5*time.Second)
		lost := c.Ended().Sub(start.At)
		if !errors.Is(err, leasehold.ErrLeaderLost) {
			t.Fatalf("Run returned %v, want an error wrapping ErrLeaderLost", err)
		}
		if lost < std.D-std.P || lost > std.D+std.L {
			t.Errorf("term lasted %v, want about RenewDeadline %v", lost, std.D)
		}
		if len(logs.Matching(`"error"="`, `RBAC forbids \"update\"`)) == 0 {
			t.Errorf(`no error logged with "RBAC forbids \"update\""`)
		}
		t.Logf("created the Lease, led %v, Run returned: %v", lost.Round(time.Millisecond), err)
		tr.Check(t)
	})
}
