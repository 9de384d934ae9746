package fencing

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"

	"github.com/leasehold/leasehold"
	"github.com/leasehold/leasehold/fence"
	"github.com/leasehold/leasehold/test/testkit"
)

const (
	// controllerSA is the service account the fenced controller writes as,
	// in each test's namespace.
	controllerSA = "controller"
	leaseName    = "fenced"
)

// newNamespace creates a namespace for one test, deleted when it ends,
// with the service account controllerSA allowed to do anything in it.
func newNamespace(t *testing.T) string {
	t.Helper()
	shared.Get(t)
	name := testkit.Namespace(t, admin, "f")
	ctx := context.Background()
	_, err := admin.RbacV1().Roles(name).Create(ctx, &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: "controller-all"},
		Rules:      []rbacv1.PolicyRule{{APIGroups: []string{"*"}, Resources: []string{"*"}, Verbs: []string{"*"}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("role for %s: %v", controllerSA, err)
	}
	_, err = admin.RbacV1().RoleBindings(name).Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "controller-all"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "controller-all"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: controllerSA, Namespace: name}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("bind %s: %v", controllerSA, err)
	}
	return name
}

// writer returns the username of the fenced controller in ns.
func writer(ns string) string { return fence.ServiceAccount(ns, controllerSA) }

// clientAs returns a clientset that acts as user, through the admin's
// impersonation, with the pod name extra set if pod is not "".
func clientAs(user, pod string) kubernetes.Interface {
	cfg := adminConfig()
	cfg.Impersonate = rest.ImpersonationConfig{UserName: user}
	if pod != "" {
		cfg.Impersonate.Extra = map[string][]string{fence.PodNameExtra: {pod}}
	}
	return kubernetes.NewForConfigOrDie(cfg)
}

// install creates the policy, then its binding, deletes both when the test
// ends, and waits until the API server enforces them: until probe, a
// write that the policy must refuse, is refused.
func install(t *testing.T, vap *admissionregistrationv1.ValidatingAdmissionPolicy, b *admissionregistrationv1.ValidatingAdmissionPolicyBinding, probe func() error) {
	t.Helper()
	ctx := context.Background()
	api := admin.AdmissionregistrationV1()
	if _, err := api.ValidatingAdmissionPolicies().Create(ctx, vap, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create ValidatingAdmissionPolicy %s: %v", vap.Name, err)
	}
	t.Cleanup(func() {
		_ = api.ValidatingAdmissionPolicyBindings().Delete(context.Background(), b.Name, metav1.DeleteOptions{})
		_ = api.ValidatingAdmissionPolicies().Delete(context.Background(), vap.Name, metav1.DeleteOptions{})
	})
	if _, err := api.ValidatingAdmissionPolicyBindings().Create(ctx, b, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create ValidatingAdmissionPolicyBinding %s: %v", b.Name, err)
	}
	var last error
	deadline := time.Now().Add(30 * time.Second)
	for {
		last = probe()
		if fence.IsFenced(last) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("policy %s not enforced 30s after it was created: the probe write returned %v", vap.Name, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// setLease writes the Lease as admin with the given holder ("" for none)
// and leaseTransitions, creating it if needed, and returns it.
func setLease(t *testing.T, ns, name, holder string, transitions int32) *coordinationv1.Lease {
	t.Helper()
	ctx := context.Background()
	leases := admin.CoordinationV1().Leases(ns)
	spec := coordinationv1.LeaseSpec{LeaseDurationSeconds: ptr.To[int32](3), LeaseTransitions: ptr.To(transitions)}
	if holder != "" {
		spec.HolderIdentity = ptr.To(holder)
	}
	cur, err := leases.Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		l, err := leases.Create(ctx, &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: spec}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("create lease: %v", err)
		}
		return l
	}
	if err != nil {
		t.Fatalf("get lease: %v", err)
	}
	cur.Spec = spec
	l, err := leases.Update(ctx, cur, metav1.UpdateOptions{})
	if err != nil {
		t.Fatalf("update lease: %v", err)
	}
	return l
}

// termOf is the term a leasehold elector would have after winning l.
func termOf(l *coordinationv1.Lease) leasehold.Term {
	return leasehold.Term{
		Lease:       l.Namespace + "/" + l.Name,
		Holder:      ptr.Deref(l.Spec.HolderIdentity, ""),
		Transitions: ptr.Deref(l.Spec.LeaseTransitions, 0),
		UID:         l.UID,
	}
}

// configMap returns a ConfigMap stamped with t (unstamped if t is nil).
func configMap(tb testing.TB, ns, name string, t *leasehold.Term) *corev1.ConfigMap {
	tb.Helper()
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Data: map[string]string{"v": "0"}}
	if t != nil {
		if err := fence.StampTerm(*t, cm); err != nil {
			tb.Fatalf("stamp: %v", err)
		}
	}
	return cm
}

// stampProbe returns a dry-run create, as the writer, of a ConfigMap
// stamped with a term no Lease can be in: refused once the stamp policy
// is enforced.
func stampProbe(ns string) func() error {
	c := clientAs(writer(ns), "")
	return func() error {
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, GenerateName: "probe-"}}
		_ = fence.StampTerm(leasehold.Term{Holder: "fence-probe", Transitions: -1, UID: types.UID("probe")}, cm)
		_, err := c.CoreV1().ConfigMaps(ns).Create(context.Background(), cm, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		return err
	}
}

// update re-reads the ConfigMap as admin, changes its data, stamps it with
// t (leaves the stored stamp if t is nil) and writes it through c.
func update(ctx context.Context, c kubernetes.Interface, ns, name string, t *leasehold.Term) error {
	cm, err := admin.CoreV1().ConfigMaps(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	cm.Data = map[string]string{"v": fmt.Sprint(time.Now().UnixNano())}
	if t != nil {
		if err := fence.StampTerm(*t, cm); err != nil {
			return err
		}
	}
	_, err = c.CoreV1().ConfigMaps(ns).Update(ctx, cm, metav1.UpdateOptions{})
	return err
}

// wantFenced fails unless err is a fenced refusal whose message contains
// every one of subs.
func wantFenced(t *testing.T, what string, err error, subs ...string) {
	t.Helper()
	if !fence.IsFenced(err) {
		t.Errorf("%s: got %v; want a fenced refusal (403, \"leasehold fence: ...\")", what, err)
		return
	}
	for _, s := range subs {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("%s: refusal %q does not mention %q", what, err.Error(), s)
		}
	}
}

func wantAdmitted(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Errorf("%s: %v; want it admitted", what, err)
	}
}
