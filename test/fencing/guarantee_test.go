package fencing

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/leasehold/leasehold"
	"github.com/leasehold/leasehold/fence"
	"github.com/leasehold/leasehold/test/testkit"
)

// guaranteeSide is one policy installed in a namespace of its own, so
// that its decisions can be seen alone: the Lease ns/leaseName, held by
// curHolder in term 5, and the deposed leader's pod (a, term 4) and the
// current leader's (b) writing as the controller's service account.
type guaranteeSide struct {
	ns       string
	old, cur leasehold.Term
	a, b     kubernetes.Interface
}

// grant lets user do anything in ns.
func grant(t *testing.T, ns, user string) {
	t.Helper()
	ctx := context.Background()
	name := "grant-" + strings.ReplaceAll(strings.ReplaceAll(user, ":", "-"), "system-serviceaccount-", "")
	if _, err := admin.RbacV1().Roles(ns).Create(ctx, &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Rules:      []rbacv1.PolicyRule{{APIGroups: []string{"*"}, Resources: []string{"*"}, Verbs: []string{"*"}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.RbacV1().RoleBindings(ns).Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: user}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// grantClusterRoles lets user create ClusterRoles (the cluster-scoped
// objects of the table's row), until the test ends.
func grantClusterRoles(t *testing.T, user string) {
	t.Helper()
	ctx := context.Background()
	name := "fencing-" + strings.ReplaceAll(user, ":", "-")
	if _, err := admin.RbacV1().ClusterRoles().Create(ctx, &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Rules:      []rbacv1.PolicyRule{{APIGroups: []string{"rbac.authorization.k8s.io"}, Resources: []string{"clusterroles"}, Verbs: []string{"create"}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: user}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = admin.RbacV1().ClusterRoleBindings().Delete(context.Background(), name, metav1.DeleteOptions{})
		_ = admin.RbacV1().ClusterRoles().Delete(context.Background(), name, metav1.DeleteOptions{})
	})
}

// stampedAsAdmin creates the ConfigMap name in ns stamped with term (none
// if nil), as admin (not fenced), and returns it.
func stampedAsAdmin(t *testing.T, ns, name string, term *leasehold.Term) *corev1.ConfigMap {
	t.Helper()
	cm, err := admin.CoreV1().ConfigMaps(ns).Create(context.Background(), configMap(t, ns, name, term), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return cm
}

// applyData server-side applies data.v to the ConfigMap as field manager
// "leader", without annotations, forcing ownership of data.v.
func applyData(ctx context.Context, c kubernetes.Interface, ns, name string, ann map[string]string) error {
	obj := map[string]any{
		"apiVersion": "v1", "kind": "ConfigMap",
		"metadata": map[string]any{"name": name, "namespace": ns},
		"data":     map[string]string{"v": "applied"},
	}
	if ann != nil {
		obj["metadata"].(map[string]any)["annotations"] = ann
	}
	body, err := json.Marshal(obj)
	if err != nil {
		return err
	}
	_, err = c.CoreV1().ConfigMaps(ns).Patch(ctx, name, types.ApplyPatchType, body, metav1.PatchOptions{FieldManager: "leader", Force: ptr.To(true)})
	return err
}

func mergeData(ctx context.Context, c kubernetes.Interface, ns, name string) error {
	_, err := c.CoreV1().ConfigMaps(ns).Patch(ctx, name, types.MergePatchType, []byte(`{"data":{"v":"merged"}}`), metav1.PatchOptions{})
	return err
}

// readModifyWrite reads the ConfigMap as admin, changes its data and sends
// it back through c with the stamp it read.
func readModifyWrite(ctx context.Context, c kubernetes.Interface, ns, name string) error {
	return update(ctx, c, ns, name, nil)
}

// Every row of fence/README.md's table "Which write each policy fences",
// on the real API server: fence.Policy installed in one namespace and
// fence.IdentityPolicy in another, each with its Lease held in term 5 by
// pod-b's identity after pod-a's term 4; the same rows are checked in
// process by the TestCEL* tests (cel_test.go).
func TestGuaranteeTable(t *testing.T) {
	ctx := context.Background()
	other := newNamespace(t)
	var stamp, ident guaranteeSide
	for _, side := range []*guaranteeSide{&stamp, &ident} {
		side.ns = newNamespace(t)
		l := setLease(t, side.ns, leaseName, curHolder, 5)
		side.cur = termOf(l)
		side.old = side.cur
		side.old.Holder, side.old.Transitions = oldHolder, 4
		side.a = clientAs(writer(side.ns), "pod-a")
		side.b = clientAs(writer(side.ns), "pod-b")
		grant(t, other, writer(side.ns))
		grantClusterRoles(t, writer(side.ns))
	}
	// The policies fence ConfigMaps, Deployments (status too for the
	// identity policy), Leases and ClusterRoles, in their namespace and
	// in other.
	resources := []fence.Resource{
		{Resource: "configmaps"}, {Group: "apps", Resource: "deployments"},
		{Group: "coordination.k8s.io", Resource: "leases"}, {Group: "rbac.authorization.k8s.io", Resource: "clusterroles"},
	}
	vap, b, err := fence.Policy(fence.Config{
		Lease: stamp.ns + "/" + leaseName, Writers: []string{writer(stamp.ns)},
		Resources: resources, Namespaces: []string{stamp.ns, other},
	})
	if err != nil {
		t.Fatal(err)
	}
	install(t, vap, b, stampProbe(stamp.ns))
	vap, b, err = fence.IdentityPolicy(fence.Config{
		Lease: ident.ns + "/" + leaseName, Writers: []string{writer(ident.ns)},
		Resources: append(resources, fence.Resource{Group: "apps", Resource: "deployments/status"}), Namespaces: []string{ident.ns, other},
	})
	if err != nil {
		t.Fatal(err)
	}
	// Widen the writers to the service account of other, as a hand-edited
	// YAML (or a policy from an older leasehold) would: the namespace
	// check must still refuse its pods.
	intruder := writer(other)
	grant(t, ident.ns, intruder)
	for i, mc := range vap.Spec.MatchConditions {
		if mc.Name == "fenced-writer" {
			vap.Spec.MatchConditions[i].Expression = "request.userInfo.username in [" + strconv.Quote(writer(ident.ns)) + ", " + strconv.Quote(intruder) + "]"
		}
	}
	podless := clientAs(writer(ident.ns), "")
	install(t, vap, b, func() error {
		cm := configMap(t, ident.ns, "", nil)
		cm.GenerateName = "probe-"
		_, err := podless.CoreV1().ConfigMaps(ident.ns).Create(ctx, cm, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		return err
	})
	waitAdmits(t, stamp.ns, stamp.cur)
	stampRefused := func(term int32) string { return "stamped for term " + strconv.Itoa(int(term)) + " of " }
	podARefused := func(ns string) string {
		return "pod pod-a does not hold Lease " + ns + "/" + leaseName + ": its holder is " + curHolder
	}
	seq := 0
	name := func() string { seq++; return "row-" + strconv.Itoa(seq) }

	t.Run("CreateStamped", func(t *testing.T) {
		_, err := stamp.a.CoreV1().ConfigMaps(stamp.ns).Create(ctx, configMap(t, stamp.ns, name(), &stamp.old), metav1.CreateOptions{})
		wantFenced(t, "policy: the deposed leader's stamped create", err, stampRefused(4)+oldHolder)
		_, err = stamp.b.CoreV1().ConfigMaps(stamp.ns).Create(ctx, configMap(t, stamp.ns, name(), &stamp.cur), metav1.CreateOptions{})
		wantAdmitted(t, "policy: the leader's stamped create", err)
		_, err = ident.a.CoreV1().ConfigMaps(ident.ns).Create(ctx, configMap(t, ident.ns, name(), &ident.old), metav1.CreateOptions{})
		wantFenced(t, "identity: the deposed leader's create", err, podARefused(ident.ns))
		_, err = ident.b.CoreV1().ConfigMaps(ident.ns).Create(ctx, configMap(t, ident.ns, name(), &ident.cur), metav1.CreateOptions{})
		wantAdmitted(t, "identity: the leader's create", err)
	})
	t.Run("UpdateStamped", func(t *testing.T) {
		n := name()
		stampedAsAdmin(t, stamp.ns, n, &stamp.cur)
		wantFenced(t, "policy: the deposed leader's restamped update", update(ctx, stamp.a, stamp.ns, n, &stamp.old), stampRefused(4)+oldHolder)
		wantAdmitted(t, "policy: the leader's restamped update", update(ctx, stamp.b, stamp.ns, n, &stamp.cur))
		stampedAsAdmin(t, ident.ns, n, &ident.cur)
		wantFenced(t, "identity: the deposed leader's update", update(ctx, ident.a, ident.ns, n, &ident.old), podARefused(ident.ns))
		wantAdmitted(t, "identity: the leader's update", update(ctx, ident.b, ident.ns, n, &ident.cur))
	})
	t.Run("PatchStamped", func(t *testing.T) {
		n := name()
		stampedAsAdmin(t, stamp.ns, n, &stamp.cur)
		oldStamp, _ := fence.TermAnnotations(stamp.old)
		_, err := stamp.a.CoreV1().ConfigMaps(stamp.ns).Patch(ctx, n, types.MergePatchType, annotationsPatch(t, oldStamp), metav1.PatchOptions{})
		wantFenced(t, "policy: the deposed leader's stamped merge patch", err, stampRefused(4)+oldHolder)
		wantFenced(t, "policy: the deposed leader's stamped apply", applyData(ctx, stamp.a, stamp.ns, n, oldStamp), stampRefused(4)+oldHolder)
		curStamp, _ := fence.TermAnnotations(stamp.cur)
		wantAdmitted(t, "policy: the leader's stamped apply", applyData(ctx, stamp.b, stamp.ns, n, curStamp))
		stampedAsAdmin(t, ident.ns, n, &ident.cur)
		wantFenced(t, "identity: the deposed leader's apply", applyData(ctx, ident.a, ident.ns, n, nil), podARefused(ident.ns))
	})
	t.Run("PatchUnstampedOfStaleObject", func(t *testing.T) {
		n := name()
		stampedAsAdmin(t, stamp.ns, n, &stamp.old)
		wantFenced(t, "policy: the deposed leader's unstamped merge patch", mergeData(ctx, stamp.a, stamp.ns, n), stampRefused(4)+oldHolder, "keeps the stamp stored on the object")
		wantFenced(t, "policy: the deposed leader's unstamped apply", applyData(ctx, stamp.a, stamp.ns, n, nil), "keeps the stamp stored on the object")
		wantFenced(t, "policy: the leader's unstamped merge patch over term 4's stamp", mergeData(ctx, stamp.b, stamp.ns, n), "keeps the stamp stored on the object")
		stampedAsAdmin(t, ident.ns, n, &ident.old)
		wantFenced(t, "identity: the deposed leader's merge patch", mergeData(ctx, ident.a, ident.ns, n), podARefused(ident.ns))
		wantAdmitted(t, "identity: the leader's merge patch", mergeData(ctx, ident.b, ident.ns, n))
	})
	t.Run("PatchUnstampedOfCurrentObject", func(t *testing.T) {
		n := name()
		stampedAsAdmin(t, stamp.ns, n, &stamp.cur)
		wantAdmitted(t, "policy: the deposed leader's unstamped merge patch of the new leader's object (not fenced by stamp)", mergeData(ctx, stamp.a, stamp.ns, n))
		wantAdmitted(t, "policy: the deposed leader's unstamped apply of the new leader's object (not fenced by stamp)", applyData(ctx, stamp.a, stamp.ns, n, nil))
		stampedAsAdmin(t, ident.ns, n, &ident.cur)
		wantFenced(t, "identity: the deposed leader's merge patch", mergeData(ctx, ident.a, ident.ns, n), podARefused(ident.ns))
		wantFenced(t, "identity: the deposed leader's apply", applyData(ctx, ident.a, ident.ns, n, nil), podARefused(ident.ns))
	})
	t.Run("ReadModifyWrite", func(t *testing.T) {
		stale, current := name(), name()
		stampedAsAdmin(t, stamp.ns, stale, &stamp.old)
		stampedAsAdmin(t, stamp.ns, current, &stamp.cur)
		wantFenced(t, "policy: read-modify-write of term 4's object", readModifyWrite(ctx, stamp.a, stamp.ns, stale), stampRefused(4), "keeps the stamp stored on the object")
		wantAdmitted(t, "policy: read-modify-write of the new leader's object (not fenced by stamp)", readModifyWrite(ctx, stamp.a, stamp.ns, current))
		stampedAsAdmin(t, ident.ns, current, &ident.cur)
		wantFenced(t, "identity: the deposed leader's read-modify-write", readModifyWrite(ctx, ident.a, ident.ns, current), podARefused(ident.ns))
	})
	t.Run("Unstamped", func(t *testing.T) {
		_, err := stamp.b.CoreV1().ConfigMaps(stamp.ns).Create(ctx, configMap(t, stamp.ns, name(), nil), metav1.CreateOptions{})
		wantFenced(t, "policy: the leader's unstamped create", err, "carries no stamp")
		_, err = ident.b.CoreV1().ConfigMaps(ident.ns).Create(ctx, configMap(t, ident.ns, name(), nil), metav1.CreateOptions{})
		wantAdmitted(t, "identity: the leader's unstamped create", err)
		_, err = ident.a.CoreV1().ConfigMaps(ident.ns).Create(ctx, configMap(t, ident.ns, name(), nil), metav1.CreateOptions{})
		wantFenced(t, "identity: the deposed leader's unstamped create", err, podARefused(ident.ns))
	})
	t.Run("StampRemoved", func(t *testing.T) {
		n := name()
		stampedAsAdmin(t, stamp.ns, n, &stamp.cur)
		_, err := stamp.a.CoreV1().ConfigMaps(stamp.ns).Update(ctx, configMap(t, stamp.ns, n, nil), metav1.UpdateOptions{})
		wantFenced(t, "policy: an update that removes the stamp", err, "carries no stamp")
		stampedAsAdmin(t, ident.ns, n, &ident.cur)
		_, err = ident.a.CoreV1().ConfigMaps(ident.ns).Update(ctx, configMap(t, ident.ns, n, nil), metav1.UpdateOptions{})
		wantFenced(t, "identity: the deposed leader's update", err, podARefused(ident.ns))
	})
	t.Run("Delete", func(t *testing.T) {
		n := name()
		stampedAsAdmin(t, stamp.ns, n, &stamp.cur)
		wantAdmitted(t, "policy: the deposed leader's delete (not fenced by stamp)", stamp.a.CoreV1().ConfigMaps(stamp.ns).Delete(ctx, n, metav1.DeleteOptions{}))
		stampedAsAdmin(t, ident.ns, n, &ident.cur)
		wantFenced(t, "identity: the deposed leader's delete", ident.a.CoreV1().ConfigMaps(ident.ns).Delete(ctx, n, metav1.DeleteOptions{}), podARefused(ident.ns))
		wantAdmitted(t, "identity: the leader's delete", ident.b.CoreV1().ConfigMaps(ident.ns).Delete(ctx, n, metav1.DeleteOptions{}))
	})
	t.Run("StatusSubresource", func(t *testing.T) {
		for _, side := range []guaranteeSide{stamp, ident} {
			d := deployment(side.ns, "d")
			if err := fence.StampTerm(side.cur, d); err != nil {
				t.Fatal(err)
			}
			if _, err := admin.AppsV1().Deployments(side.ns).Create(ctx, d, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		wantAdmitted(t, "policy: the deposed leader's status write (not matched)", writeStatus(ctx, stamp.a, stamp.ns, "d", 1))
		wantFenced(t, "identity: the deposed leader's status write", writeStatus(ctx, ident.a, ident.ns, "d", 1), podARefused(ident.ns))
		wantAdmitted(t, "identity: the leader's status write", writeStatus(ctx, ident.b, ident.ns, "d", 2))
	})
	t.Run("ElectionLeaseExemptOnlyInItsNamespace", func(t *testing.T) {
		for _, side := range []guaranteeSide{stamp, ident} {
			l, err := admin.CoordinationV1().Leases(side.ns).Get(ctx, leaseName, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			l.Spec.RenewTime = &metav1.MicroTime{Time: time.Now()}
			_, err = side.a.CoordinationV1().Leases(side.ns).Update(ctx, l, metav1.UpdateOptions{DryRun: []string{metav1.DryRunAll}})
			wantAdmitted(t, side.ns+": the deposed leader's write of the election Lease", err)
			another := lease("pod-a", 1)
			another.Namespace, another.Name, another.UID = other, leaseName, ""
			_, err = side.a.CoordinationV1().Leases(other).Create(ctx, another, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
			if side.ns == stamp.ns {
				wantFenced(t, "policy: an unstamped create of a Lease of the same name in another namespace", err, "carries no stamp")
			} else {
				wantFenced(t, "identity: the deposed leader's create of a Lease of the same name in another namespace", err, podARefused(ident.ns))
			}
		}
	})
	t.Run("ClusterScopedFencedWithNamespaces", func(t *testing.T) {
		role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{GenerateName: "fenced-"}}
		dry := metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}
		_, err := stamp.a.RbacV1().ClusterRoles().Create(ctx, role, dry)
		wantFenced(t, "policy: an unstamped create of a ClusterRole", err, "carries no stamp")
		stamped := role.DeepCopy()
		if err := fence.StampTerm(stamp.cur, stamped); err != nil {
			t.Fatal(err)
		}
		_, err = stamp.b.RbacV1().ClusterRoles().Create(ctx, stamped, dry)
		wantAdmitted(t, "policy: the leader's stamped create of a ClusterRole", err)
		_, err = ident.a.RbacV1().ClusterRoles().Create(ctx, role, dry)
		wantFenced(t, "identity: the deposed leader's create of a ClusterRole", err, podARefused(ident.ns))
		_, err = ident.b.RbacV1().ClusterRoles().Create(ctx, role, dry)
		wantAdmitted(t, "identity: the leader's create of a ClusterRole", err)
	})
	t.Run("PodOfAnotherNamespace", func(t *testing.T) {
		_, err := clientAs(intruder, "pod-b").CoreV1().ConfigMaps(ident.ns).Create(ctx, configMap(t, ident.ns, name(), nil), metav1.CreateOptions{})
		wantFenced(t, "identity: pod "+other+"/pod-b writing for holder "+curHolder, err, intruder+" is not a service account of namespace "+ident.ns)
	})
	t.Run("OtherUsersNotChecked", func(t *testing.T) {
		for _, side := range []guaranteeSide{stamp, ident} {
			n := name()
			_, err := admin.CoreV1().ConfigMaps(side.ns).Create(ctx, configMap(t, side.ns, n, &side.old), metav1.CreateOptions{})
			wantAdmitted(t, side.ns+": another user's create stamped in term 4", err)
			wantAdmitted(t, side.ns+": another user's delete", admin.CoreV1().ConfigMaps(side.ns).Delete(ctx, n, metav1.DeleteOptions{}))
		}
	})
	// Last: these change the Leases.
	t.Run("NoHolderOrNoLease", func(t *testing.T) {
		for _, side := range []guaranteeSide{stamp, ident} {
			setLease(t, side.ns, leaseName, "", 5)
		}
		testkit.Eventually(t, 10*time.Second, "the released Leases to refuse the last holder", func() bool {
			_, e1 := stamp.b.CoreV1().ConfigMaps(stamp.ns).Create(ctx, configMap(t, stamp.ns, "", &stamp.cur), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
			_, e2 := ident.b.CoreV1().ConfigMaps(ident.ns).Create(ctx, configMap(t, ident.ns, "", nil), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
			return e1 != nil && e2 != nil
		})
		_, err := stamp.b.CoreV1().ConfigMaps(stamp.ns).Create(ctx, configMap(t, stamp.ns, name(), &stamp.cur), metav1.CreateOptions{})
		wantFenced(t, "policy: the last holder's write after its release", err, "has no holder")
		_, err = ident.b.CoreV1().ConfigMaps(ident.ns).Create(ctx, configMap(t, ident.ns, name(), nil), metav1.CreateOptions{})
		wantFenced(t, "identity: the last holder's write after its release", err, "it has no holder")
		for _, side := range []guaranteeSide{stamp, ident} {
			if err := admin.CoordinationV1().Leases(side.ns).Delete(ctx, leaseName, metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
			c := side.b
			testkit.Eventually(t, 10*time.Second, "writes to be refused without the Lease in "+side.ns, func() bool {
				_, err = c.CoreV1().ConfigMaps(side.ns).Create(ctx, configMap(t, side.ns, name(), &side.cur), metav1.CreateOptions{})
				return apierrors.IsInvalid(err)
			})
			if !strings.Contains(err.Error(), "no params found") || fence.IsFenced(err) {
				t.Errorf("%s: a write without the Lease: %v; want 422 \"no params found\", not IsFenced", side.ns, err)
			}
		}
	})
}
