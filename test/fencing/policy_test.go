package fencing

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/leasehold/leasehold"
	"github.com/leasehold/leasehold/fence"
	"github.com/leasehold/leasehold/test/testkit"
)

// installStampPolicy installs fence.Policy for the Lease ns/leaseName,
// fencing the controller's writes to ConfigMaps in ns.
func installStampPolicy(t *testing.T, ns string, allowUnstamped bool) {
	t.Helper()
	vap, b, err := fence.Policy(fence.Config{
		Lease:          ns + "/" + leaseName,
		Writers:        []string{writer(ns)},
		Resources:      []fence.Resource{{Group: "", Resource: "configmaps"}},
		Namespaces:     []string{ns},
		AllowUnstamped: allowUnstamped,
	})
	if err != nil {
		t.Fatal(err)
	}
	install(t, vap, b, stampProbe(ns))
}

// waitAdmits waits until the API server admits a write stamped with term:
// its cached copy of the Lease has caught up with the last setLease.
func waitAdmits(t *testing.T, ns string, term leasehold.Term) {
	t.Helper()
	w := clientAs(writer(ns), "")
	var err error
	testkit.Eventually(t, 10*time.Second, "the API server to admit term "+term.String(), func() bool {
		cm := configMap(t, ns, "", &term)
		cm.GenerateName = "wait-"
		_, err = w.CoreV1().ConfigMaps(ns).Create(context.Background(), cm, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		return err == nil
	})
}

// Every decision of the stamp policy, on the real API server, with the
// Lease written directly.
func TestStampPolicyDecisions(t *testing.T) {
	ns := newNamespace(t)
	ctx := context.Background()
	lease := setLease(t, ns, leaseName, "a", 3)
	cur := termOf(lease)
	installStampPolicy(t, ns, false)
	w := clientAs(writer(ns), "")
	cms := w.CoreV1().ConfigMaps(ns)
	leaseRef := "Lease " + ns + "/" + leaseName

	// The current term writes.
	_, err := cms.Create(ctx, configMap(t, ns, "current", &cur), metav1.CreateOptions{})
	wantAdmitted(t, "create stamped with the current term", err)
	wantAdmitted(t, "update stamped with the current term", update(ctx, w, ns, "current", &cur))

	// Stamps that are not the current term.
	other := func(mod func(*leasehold.Term)) *leasehold.Term { c := cur; mod(&c); return &c }
	for _, tc := range []struct {
		name  string
		stamp *leasehold.Term
		subs  []string
	}{
		{"another holder", other(func(c *leasehold.Term) { c.Holder = "b" }), []string{"stamped for term 3 of b", leaseRef + " is in term 3 of a"}},
		{"an older term", other(func(c *leasehold.Term) { c.Transitions = 2 }), []string{"stamped for term 2 of a", "is in term 3 of a"}},
		{"a newer term", other(func(c *leasehold.Term) { c.Transitions = 4 }), []string{"stamped for term 4 of a"}},
		{"another Lease object", other(func(c *leasehold.Term) { c.UID = "3f0e5a9c-0000-4000-8000-000000000000" }), []string{"the stamp names Lease UID 3f0e5a9c-0000-4000-8000-000000000000, the Lease's UID is " + string(cur.UID)}},
	} {
		_, err := cms.Create(ctx, configMap(t, ns, "new-"+strings.ToLower(strings.ReplaceAll(tc.name, " ", "-")), tc.stamp), metav1.CreateOptions{})
		wantFenced(t, "create stamped with "+tc.name, err, tc.subs...)
		wantFenced(t, "update stamped with "+tc.name, update(ctx, w, ns, "current", tc.stamp), tc.subs...)
	}

	// Malformed and partial stamps never match.
	for name, ann := range map[string]map[string]string{
		"a term that is not a number": {fence.HolderAnnotation: "a", fence.TermAnnotation: "03", fence.LeaseUIDAnnotation: string(cur.UID)},
		"the holder alone":            {fence.HolderAnnotation: "a"},
		"no Lease UID":                {fence.HolderAnnotation: "a", fence.TermAnnotation: "3"},
	} {
		cm := configMap(t, ns, "", nil)
		cm.GenerateName, cm.Annotations = "partial-", ann
		_, err := cms.Create(ctx, cm, metav1.CreateOptions{})
		wantFenced(t, "create stamped with "+name, err, "only the Lease's current term may write")
	}

	// No stamp: refused for the controller, with the keys to set.
	_, err = cms.Create(ctx, configMap(t, ns, "unstamped", nil), metav1.CreateOptions{})
	wantFenced(t, "unstamped create by the controller", err, "carries no stamp", fence.HolderAnnotation, fence.TermAnnotation, fence.LeaseUIDAnnotation)

	// Other writers are not fenced at all.
	_, err = admin.CoreV1().ConfigMaps(ns).Create(ctx, configMap(t, ns, "by-admin", nil), metav1.CreateOptions{})
	wantAdmitted(t, "unstamped create by another user", err)
	wantAdmitted(t, "update stamped with another holder by another user", update(ctx, admin, ns, "current", other(func(c *leasehold.Term) { c.Holder = "b" })))
	// (That update left b's stamp on "current"; restamp it.)
	wantAdmitted(t, "restamp", update(ctx, w, ns, "current", &cur))

	// Deletes are not fenced by the stamp policy.
	wantAdmitted(t, "delete by the controller", cms.Delete(ctx, "by-admin", metav1.DeleteOptions{}))

	// The stamp checked is the stored object's: a patch that sets no
	// stamp inherits the current one (hence: stamp every write), and a
	// patch that carries an old stamp is refused.
	_, err = cms.Patch(ctx, "current", types.MergePatchType, []byte(`{"data":{"v":"patched"}}`), metav1.PatchOptions{})
	wantAdmitted(t, "patch without a stamp of an object stamped with the current term (documented: the stored stamp is checked)", err)
	old, err := fence.TermAnnotations(*other(func(c *leasehold.Term) { c.Transitions = 2 }))
	if err != nil {
		t.Fatal(err)
	}
	_, err = cms.Patch(ctx, "current", types.MergePatchType, annotationsPatch(t, old), metav1.PatchOptions{})
	wantFenced(t, "patch carrying an old stamp", err, "stamped for term 2 of a")

	// A Lease with no holder admits no stamp.
	setLease(t, ns, leaseName, "", 3)
	testkit.Eventually(t, 10*time.Second, "the released Lease to refuse the old term", func() bool {
		err = update(ctx, w, ns, "current", &cur)
		return err != nil
	})
	wantFenced(t, "update stamped with the last term of a released Lease", err, leaseRef+" has no holder")
	cm := configMap(t, ns, "", nil)
	cm.GenerateName, cm.Annotations = "no-holder-", map[string]string{fence.HolderAnnotation: "", fence.TermAnnotation: "3", fence.LeaseUIDAnnotation: string(cur.UID)}
	_, err = cms.Create(ctx, cm, metav1.CreateOptions{})
	wantFenced(t, "create stamped with no holder, on a Lease with no holder", err, leaseRef+" has no holder")

	// No Lease: everything the controller writes is refused, as a
	// configuration error of the binding.
	if err := admin.CoordinationV1().Leases(ns).Delete(ctx, leaseName, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, "writes to be refused without the Lease", func() bool {
		err = update(ctx, w, ns, "current", &cur)
		return apierrors.IsInvalid(err)
	})
	if !strings.Contains(err.Error(), "no params found") || fence.IsFenced(err) {
		t.Errorf("write without the Lease: got %v (IsFenced %v); want 422 \"no params found\", not reported as fenced", err, fence.IsFenced(err))
	}

	// A re-created Lease restarts its count: the same holder and term on
	// the new object do not admit the old object's stamp.
	recreated := setLease(t, ns, leaseName, "a", 3)
	next := termOf(recreated)
	waitAdmits(t, ns, next)
	wantFenced(t, "update stamped with the same holder and term of the deleted Lease", update(ctx, w, ns, "current", &cur), "the stamp names Lease UID "+string(cur.UID))
	wantAdmitted(t, "update stamped with the re-created Lease's term", update(ctx, w, ns, "current", &next))
}

// With AllowUnstamped, the controller's unstamped writes pass and stamped
// ones are still checked.
func TestStampPolicyAllowUnstamped(t *testing.T) {
	ns := newNamespace(t)
	ctx := context.Background()
	cur := termOf(setLease(t, ns, leaseName, "a", 1))
	installStampPolicy(t, ns, true)
	cms := clientAs(writer(ns), "").CoreV1().ConfigMaps(ns)

	_, err := cms.Create(ctx, configMap(t, ns, "unstamped", nil), metav1.CreateOptions{})
	wantAdmitted(t, "unstamped create with AllowUnstamped", err)
	_, err = cms.Create(ctx, configMap(t, ns, "current", &cur), metav1.CreateOptions{})
	wantAdmitted(t, "create stamped with the current term", err)
	stale := cur
	stale.Transitions = 0
	_, err = cms.Create(ctx, configMap(t, ns, "stale", &stale), metav1.CreateOptions{})
	wantFenced(t, "create stamped with an old term", err, "stamped for term 0 of a")
}

// annotationsPatch is a merge patch that sets data and the annotations.
func annotationsPatch(t *testing.T, ann map[string]string) []byte {
	t.Helper()
	b, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": ann}, "data": map[string]string{"v": "old"}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}
