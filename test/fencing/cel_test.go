package fencing

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"github.com/leasehold/leasehold"
	"github.com/leasehold/leasehold/fence"
)

// The tests named TestCEL* evaluate the fence package's policies with the
// API server's admission code in process (admission_test.go): they need no
// control plane and run in milliseconds, so hack/mutate runs them.

const (
	celNS    = "team-a"
	celLease = "my-controller"
	celUID   = types.UID("5d1c6a0e-0000-4000-8000-00000000000a")
)

var celWriterName = fence.ServiceAccount(celNS, "controller")

// celConfig fences the ConfigMaps of team-a written by its controller.
func celConfig() fence.Config {
	return fence.Config{
		Lease:     celNS + "/" + celLease,
		Writers:   []string{celWriterName},
		Resources: []fence.Resource{{Resource: "configmaps"}},
	}
}

// lease is the election Lease with holder ("" for none) in the term
// transitions.
func lease(holder string, transitions int32) *coordinationv1.Lease {
	l := &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Namespace: celNS, Name: celLease, UID: celUID},
		Spec:       coordinationv1.LeaseSpec{LeaseTransitions: ptr.To(transitions), LeaseDurationSeconds: ptr.To[int32](15)},
	}
	if holder != "" {
		l.Spec.HolderIdentity = ptr.To(holder)
	}
	return l
}

// stampPolicy is an admissionServer for fence.Policy(c), with the Lease
// held by holder in term transitions.
func stampPolicy(t *testing.T, c fence.Config, holder string, transitions int32) *admissionServer {
	t.Helper()
	vap, b, err := fence.Policy(c)
	if err != nil {
		t.Fatal(err)
	}
	s := newAdmissionServer(t, vap, b)
	s.setLease(lease(holder, transitions))
	return s
}

// identityPolicy is an admissionServer for fence.IdentityPolicy(c), with
// the Lease held by holder.
func identityPolicy(t *testing.T, c fence.Config, holder string) *admissionServer {
	t.Helper()
	vap, b, err := fence.IdentityPolicy(c)
	if err != nil {
		t.Fatal(err)
	}
	s := newAdmissionServer(t, vap, b)
	s.setLease(lease(holder, 1))
	return s
}

// termOfLease is the term the holder of lease(holder, transitions) has.
func termOfLease(holder string, transitions int32) *leasehold.Term {
	return &leasehold.Term{Lease: celNS + "/" + celLease, Holder: holder, Transitions: transitions, UID: celUID}
}

// The stamp policy admits the current term and refuses any other, and the
// term (leaseTransitions) is compared on its own: the same holder in
// another term is another term.
func TestCELStampComparesHolderTermAndUID(t *testing.T) {
	s := stampPolicy(t, celConfig(), "pod-a_1", 5)
	w := requester{user: celWriterName}
	cur := termOfLease("pod-a_1", 5)
	wantAdmitted(t, "create stamped with the current term", s.admit(w, createOf(t, configMap(t, celNS, "x", cur))))
	for _, tc := range []struct {
		name  string
		stamp *leasehold.Term
		subs  []string
	}{
		{"the same holder in an older term", termOfLease("pod-a_1", 4), []string{"stamped for term 4 of pod-a_1", "is in term 5 of pod-a_1"}},
		{"the same holder in a newer term", termOfLease("pod-a_1", 6), []string{"stamped for term 6 of pod-a_1"}},
		{"another holder in the same term", termOfLease("pod-b_2", 5), []string{"stamped for term 5 of pod-b_2"}},
		{"another Lease object", &leasehold.Term{Holder: "pod-a_1", Transitions: 5, UID: "other-uid"}, []string{"the stamp names Lease UID other-uid"}},
	} {
		wantFenced(t, "create stamped with "+tc.name, s.admit(w, createOf(t, configMap(t, celNS, "x", tc.stamp))), tc.subs...)
	}
}

// The guarantee rows (fence/README.md, "Which write each policy fences")
// are checked on one takeover: pod-a's term 4 is over, pod-b holds the
// Lease in term 5. Both policies are installed; both pods write as the
// controller's service account.
const (
	oldHolder = "pod-a_1a2b3c"
	curHolder = "pod-b_4d5e6f"
)

type takeover struct {
	stamp, identity *admissionServer
	old, cur        *leasehold.Term
	// a is the deposed leader's pod, b the current one's, admin a user
	// the policies do not fence.
	a, b, admin requester
}

// newTakeover installs both policies for c (both fence Deployments and
// ConfigMaps; the identity policy Deployments' status too).
func newTakeover(t *testing.T, mod func(*fence.Config)) *takeover {
	t.Helper()
	c := celConfig()
	c.Resources = []fence.Resource{{Resource: "configmaps"}, {Group: "apps", Resource: "deployments"}}
	if mod != nil {
		mod(&c)
	}
	ic := c
	ic.AllowUnstamped = false
	ic.Resources = append(append([]fence.Resource(nil), c.Resources...), fence.Resource{Group: "apps", Resource: "deployments/status"})
	return &takeover{
		stamp:    stampPolicy(t, c, curHolder, 5),
		identity: identityPolicy(t, ic, curHolder),
		old:      termOfLease(oldHolder, 4),
		cur:      termOfLease(curHolder, 5),
		a:        requester{user: celWriterName, pod: "pod-a"},
		b:        requester{user: celWriterName, pod: "pod-b"},
		admin:    requester{user: "kubernetes-admin"},
	}
}

// both returns the answers of the stamp policy and of the identity policy
// to w sent by who.
func (f *takeover) both(who requester, w write) (stamp, identity error) {
	return f.stamp.admit(who, w), f.identity.admit(who, w)
}

// setLease sets the Lease seen by both policies.
func (f *takeover) setLease(l *coordinationv1.Lease) {
	f.stamp.setLease(l)
	f.identity.setLease(l)
}

func stampedCM(t *testing.T, name string, term *leasehold.Term) *corev1.ConfigMap {
	return configMap(t, celNS, name, term)
}

// modified returns a copy of cm with other data, as a writer that read cm
// sends it back.
func modified(cm *corev1.ConfigMap) *corev1.ConfigMap {
	c := cm.DeepCopy()
	c.Data = map[string]string{"v": "changed"}
	return c
}

const podARefused = "pod pod-a does not hold Lease " + celNS + "/" + celLease + ": its holder is " + curHolder

// Row: a create stamped with the writer's term.
func TestCELCreateStamped(t *testing.T) {
	f := newTakeover(t, nil)
	s, i := f.both(f.a, createOf(t, stampedCM(t, "x", f.old)))
	wantFenced(t, "policy: the deposed leader's stamped create", s, "stamped for term 4 of "+oldHolder, "is in term 5 of "+curHolder)
	wantFenced(t, "identity: the deposed leader's create", i, podARefused)
	s, i = f.both(f.b, createOf(t, stampedCM(t, "x", f.cur)))
	wantAdmitted(t, "policy: the leader's stamped create", s)
	wantAdmitted(t, "identity: the leader's create", i)
}

// Row: an update (PUT) stamped with the writer's term, whatever stamp the
// object it read carried: Stamp replaces it.
func TestCELUpdateStamped(t *testing.T) {
	f := newTakeover(t, nil)
	for _, stored := range []*corev1.ConfigMap{stampedCM(t, "x", f.cur), stampedCM(t, "x", f.old), stampedCM(t, "x", nil)} {
		restamped := modified(stored)
		if err := fence.StampTerm(*f.old, restamped); err != nil {
			t.Fatal(err)
		}
		s, i := f.both(f.a, updateOf(t, stored, restamped))
		wantFenced(t, "policy: the deposed leader's restamped update", s, "stamped for term 4 of "+oldHolder)
		wantFenced(t, "identity: the deposed leader's update", i, podARefused)
		if err := fence.StampTerm(*f.cur, restamped); err != nil {
			t.Fatal(err)
		}
		s, i = f.both(f.b, updateOf(t, stored, restamped))
		wantAdmitted(t, "policy: the leader's restamped update", s)
		wantAdmitted(t, "identity: the leader's update", i)
	}
}

// Row: a merge patch or server-side apply that carries the writer's stamp
// (fence.Annotations).
func TestCELPatchStamped(t *testing.T) {
	f := newTakeover(t, nil)
	stored := stampedCM(t, "x", f.cur)
	oldStamp, err := fence.TermAnnotations(*f.old)
	if err != nil {
		t.Fatal(err)
	}
	patch := map[string]any{"metadata": map[string]any{"annotations": oldStamp}, "data": map[string]string{"v": "old"}}
	s, i := f.both(f.a, patchOf(t, stored, patch))
	wantFenced(t, "policy: the deposed leader's stamped patch", s, "stamped for term 4 of "+oldHolder)
	wantFenced(t, "identity: the deposed leader's patch", i, podARefused)
	curStamp, _ := fence.TermAnnotations(*f.cur)
	patch["metadata"] = map[string]any{"annotations": curStamp}
	s, i = f.both(f.b, patchOf(t, stored, patch))
	wantAdmitted(t, "policy: the leader's stamped patch", s)
	wantAdmitted(t, "identity: the leader's patch", i)
}

// Row: a merge patch or server-side apply without a stamp, of an object
// whose stored stamp is not the current term's (the deposed leader wrote
// it last): the stored stamp is judged, and refused, with a message that
// says the write kept it.
func TestCELPatchUnstampedOfStaleObject(t *testing.T) {
	f := newTakeover(t, nil)
	stored := stampedCM(t, "x", f.old)
	patch := map[string]any{"data": map[string]string{"v": "unstamped"}}
	s, i := f.both(f.a, patchOf(t, stored, patch))
	wantFenced(t, "policy: the deposed leader's unstamped patch of its own object", s,
		"stamped for term 4 of "+oldHolder, "keeps the stamp stored on the object")
	wantFenced(t, "identity: the deposed leader's patch", i, podARefused)
	// The current leader must stamp too.
	s, i = f.both(f.b, patchOf(t, stored, patch))
	wantFenced(t, "policy: the leader's unstamped patch of an object stamped in another term", s, "keeps the stamp stored on the object")
	wantAdmitted(t, "identity: the leader's patch", i)
}

// Row: a merge patch or server-side apply without a stamp, of an object
// the current leader has stamped. The stamp policy cannot tell it from the
// leader's own write and admits it (the documented gap); the identity
// policy refuses the deposed pod.
func TestCELPatchUnstampedOfCurrentObject(t *testing.T) {
	f := newTakeover(t, nil)
	stored := stampedCM(t, "x", f.cur)
	s, i := f.both(f.a, patchOf(t, stored, map[string]any{"data": map[string]string{"v": "unstamped"}}))
	wantAdmitted(t, "policy: the deposed leader's unstamped patch of an object stamped in the current term (not fenced by stamp)", s)
	wantFenced(t, "identity: the deposed leader's patch", i, podARefused)
}

// Row: a read-modify-write that sends back the stamp it read. Judged by
// that stamp: refused if it is not the current term's, admitted if the
// current leader wrote it (the documented gap); the identity policy
// refuses the deposed pod either way.
func TestCELReadModifyWrite(t *testing.T) {
	f := newTakeover(t, nil)
	stale := stampedCM(t, "x", f.old)
	s, i := f.both(f.a, updateOf(t, stale, modified(stale)))
	wantFenced(t, "policy: read-modify-write of an object stamped in term 4", s, "stamped for term 4 of "+oldHolder, "keeps the stamp stored on the object")
	wantFenced(t, "identity: the deposed leader's update", i, podARefused)
	current := stampedCM(t, "x", f.cur)
	s, i = f.both(f.a, updateOf(t, current, modified(current)))
	wantAdmitted(t, "policy: read-modify-write of an object stamped in the current term (not fenced by stamp)", s)
	wantFenced(t, "identity: the deposed leader's update", i, podARefused)
}

// Row: a write with no stamp at all, of an object that has none: refused
// by the stamp policy unless AllowUnstamped; the identity policy needs no
// stamp.
func TestCELUnstamped(t *testing.T) {
	f := newTakeover(t, nil)
	s, i := f.both(f.b, createOf(t, stampedCM(t, "x", nil)))
	wantFenced(t, "policy: the leader's unstamped create", s, "carries no stamp", fence.HolderAnnotation, fence.TermAnnotation, fence.LeaseUIDAnnotation)
	wantAdmitted(t, "identity: the leader's create", i)
	_, i = f.both(f.a, createOf(t, stampedCM(t, "x", nil)))
	wantFenced(t, "identity: the deposed leader's create", i, podARefused)

	lax := newTakeover(t, func(c *fence.Config) { c.AllowUnstamped = true })
	unstamped := stampedCM(t, "x", nil)
	wantAdmitted(t, "policy with AllowUnstamped: an unstamped create", lax.stamp.admit(lax.a, createOf(t, unstamped)))
	wantAdmitted(t, "policy with AllowUnstamped: an unstamped update of an unstamped object", lax.stamp.admit(lax.a, updateOf(t, unstamped, modified(unstamped))))
	wantFenced(t, "policy with AllowUnstamped: a stamped create of another term", lax.stamp.admit(lax.a, createOf(t, stampedCM(t, "y", lax.old))), "stamped for term 4")
}

// Row: an update that removes the stored stamp (an object built from
// scratch, a patch that deletes the annotations): refused by the stamp
// policy, with AllowUnstamped too, since the write carries no stamp of
// its own and would erase the term that wrote the object.
func TestCELStampRemoved(t *testing.T) {
	for _, allow := range []bool{false, true} {
		f := newTakeover(t, func(c *fence.Config) { c.AllowUnstamped = allow })
		for _, storedTerm := range []*leasehold.Term{f.old, f.cur} {
			stored := stampedCM(t, "x", storedTerm)
			fresh := stampedCM(t, "x", nil)
			s, i := f.both(f.a, updateOf(t, stored, fresh))
			wantFenced(t, fmt.Sprintf("policy (AllowUnstamped %v): an update that removes the stamp of term %d", allow, storedTerm.Transitions), s, "no stamp")
			wantFenced(t, "identity: the deposed leader's update", i, podARefused)
			patch := map[string]any{"metadata": map[string]any{"annotations": map[string]any{
				fence.HolderAnnotation: nil, fence.TermAnnotation: nil, fence.LeaseUIDAnnotation: nil,
			}}}
			s, _ = f.both(f.a, patchOf(t, stored, patch))
			wantFenced(t, fmt.Sprintf("policy (AllowUnstamped %v): a patch that deletes the stamp of term %d", allow, storedTerm.Transitions), s, "no stamp")
		}
	}
}

// Row: a delete. It carries no object to stamp: the stamp policy does
// not see it; the identity policy admits only the holder's pod.
func TestCELDelete(t *testing.T) {
	f := newTakeover(t, nil)
	stored := stampedCM(t, "x", f.cur)
	s, i := f.both(f.a, deleteOf(t, stored))
	wantAdmitted(t, "policy: the deposed leader's delete (not fenced by stamp)", s)
	wantFenced(t, "identity: the deposed leader's delete", i, podARefused)
	_, i = f.both(f.b, deleteOf(t, stored))
	wantAdmitted(t, "identity: the leader's delete", i)
}

// Row: a write through the status subresource. The stamp policy refuses
// to fence subresources (the API server may reset metadata there) and
// does not match them; the identity policy fences them.
func TestCELStatusSubresource(t *testing.T) {
	f := newTakeover(t, nil)
	d := deployment(celNS, "d")
	if err := fence.StampTerm(*f.cur, d); err != nil {
		t.Fatal(err)
	}
	status := d.DeepCopy()
	status.Status.ObservedGeneration = 7
	s, i := f.both(f.a, statusOf(t, d, status))
	wantAdmitted(t, "policy: the deposed leader's status write (not matched)", s)
	wantFenced(t, "identity: the deposed leader's status write", i, podARefused)
	_, i = f.both(f.b, statusOf(t, d, status))
	wantAdmitted(t, "identity: the leader's status write", i)
	c := celConfig()
	c.Resources = []fence.Resource{{Group: "apps", Resource: "deployments/status"}}
	if _, _, err := fence.Policy(c); !errors.Is(err, fence.ErrInvalidConfig) || !strings.Contains(err.Error(), "fence it with IdentityPolicy") {
		t.Errorf("Policy with deployments/status: %v; want ErrInvalidConfig pointing to IdentityPolicy", err)
	}
}

// Row: while the Lease has no holder every fenced write is refused; while
// it does not exist, too, as a configuration error (422, not IsFenced).
func TestCELNoHolderOrNoLease(t *testing.T) {
	f := newTakeover(t, nil)
	f.setLease(lease("", 5))
	released := termOfLease("", 5)
	s, i := f.both(f.b, createOf(t, stampedCM(t, "x", f.cur)))
	wantFenced(t, "policy: the last holder's write after its release", s, "Lease "+celNS+"/"+celLease+" has no holder")
	wantFenced(t, "identity: the last holder's write after its release", i, "pod pod-b does not hold Lease "+celNS+"/"+celLease+": it has no holder")
	// A stamp with an empty holder matches a Lease with none on every
	// other field, and is refused all the same.
	cm := stampedCM(t, "x", nil)
	cm.Annotations = map[string]string{fence.HolderAnnotation: "", fence.TermAnnotation: "5", fence.LeaseUIDAnnotation: string(released.UID)}
	wantFenced(t, "policy: a stamp with no holder on a Lease with none", f.stamp.admit(f.b, createOf(t, cm)), "has no holder")

	f.setLease(nil)
	s, i = f.both(f.b, createOf(t, stampedCM(t, "x", f.cur)))
	for name, err := range map[string]error{"policy": s, "identity": i} {
		if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "no params found") || fence.IsFenced(err) {
			t.Errorf("%s: a write without the Lease: %v; want 422 \"no params found\", not IsFenced", name, err)
		}
	}
}

// Row: users other than Writers are not checked at all.
func TestCELOtherUsersNotChecked(t *testing.T) {
	f := newTakeover(t, nil)
	stored := stampedCM(t, "x", f.cur)
	for what, w := range map[string]write{
		"unstamped create":          createOf(t, stampedCM(t, "y", nil)),
		"create stamped in term 4":  createOf(t, stampedCM(t, "y", f.old)),
		"update that drops a stamp": updateOf(t, stored, stampedCM(t, "x", nil)),
		"delete":                    deleteOf(t, stored),
	} {
		s, i := f.both(f.admin, w)
		wantAdmitted(t, "policy: another user's "+what, s)
		wantAdmitted(t, "identity: another user's "+what, i)
	}
	// The controller's service account from another pod is the writer.
	_, i := f.both(requester{user: celWriterName, pod: "pod-c"}, deleteOf(t, stored))
	wantFenced(t, "identity: the controller's delete from a pod that never led", i, "pod pod-c does not hold")
}

// The holder is the pod's name, or that name, "_" and anything: a pod
// whose name is a prefix of the holder's, or equal to the part before
// another separator, is not the holder.
func TestCELIdentityHolderIsPodNameThenUnderscore(t *testing.T) {
	for _, tc := range []struct {
		holder, pod string
		admit       bool
	}{
		{"pod-b", "pod-b", true},
		{"pod-b_4d5e6f", "pod-b", true},
		{"pod-b_", "pod-b", true},
		{"pod-b_4d5e6f", "pod", false},
		{"pod-b_4d5e6f", "pod-", false},
		{"pod-bb_4d5e6f", "pod-b", false},
		{"pod-b-1_4d5e6f", "pod-b", false},
		{"pod-b.x", "pod-b", false},
		{"pod-b", "pod-b-1", false},
	} {
		s := identityPolicy(t, celConfig(), tc.holder)
		err := s.admit(requester{user: celWriterName, pod: tc.pod}, createOf(t, stampedCM(t, "y", nil)))
		if tc.admit {
			wantAdmitted(t, fmt.Sprintf("pod %s, holder %s", tc.pod, tc.holder), err)
		} else {
			wantFenced(t, fmt.Sprintf("pod %s, holder %s", tc.pod, tc.holder), err, "pod "+tc.pod+" does not hold")
		}
	}
	// A token bound to no pod, or extra naming two, names no pod.
	s := identityPolicy(t, celConfig(), "pod-b")
	wantFenced(t, "no pod", s.admit(requester{user: celWriterName}, createOf(t, stampedCM(t, "y", nil))), "the request names no pod")
}

// Row: the election's own Lease is never fenced (its writes are how a
// term begins), and only that Lease: one of the same name in another
// namespace, or another Lease in its namespace, is fenced like any object.
func TestCELElectionLeaseExemptOnlyInItsNamespace(t *testing.T) {
	f := newTakeover(t, func(c *fence.Config) {
		c.Resources = []fence.Resource{{Group: "coordination.k8s.io", Resource: "leases"}}
	})
	election := lease(curHolder, 5)
	renewed := election.DeepCopy()
	renewed.Spec.RenewTime = &metav1.MicroTime{Time: time.Now()}
	for _, who := range []requester{f.a, f.b} {
		s, i := f.both(who, updateOf(t, election, renewed))
		wantAdmitted(t, "policy: a write of the election Lease by "+who.pod, s)
		wantAdmitted(t, "identity: a write of the election Lease by "+who.pod, i)
	}
	for _, other := range []struct{ ns, name string }{{"team-b", celLease}, {celNS, "another-lease"}} {
		l := lease("pod-a", 1)
		l.Namespace, l.Name, l.UID = other.ns, other.name, "other-lease-uid"
		s, i := f.both(f.a, createOf(t, l))
		wantFenced(t, "policy: the controller's unstamped create of Lease "+other.ns+"/"+other.name, s, "carries no stamp")
		wantFenced(t, "identity: the deposed leader's create of Lease "+other.ns+"/"+other.name, i, podARefused)
		if err := fence.StampTerm(*f.cur, l); err != nil {
			t.Fatal(err)
		}
		wantAdmitted(t, "policy: the leader's stamped create of Lease "+other.ns+"/"+other.name, f.stamp.admit(f.b, createOf(t, l)))
	}
}

// Row: with Namespaces set, namespaced objects outside them are not
// fenced, and cluster-scoped objects of the fenced resources are.
func TestCELClusterScopedFencedWithNamespaces(t *testing.T) {
	f := newTakeover(t, func(c *fence.Config) {
		c.Namespaces = []string{celNS}
		c.Resources = []fence.Resource{{Resource: "configmaps"}, {Resource: "namespaces"}, {Group: "rbac.authorization.k8s.io", Resource: "clusterroles"}}
	})
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "controller-made"}}
	s, i := f.both(f.a, createOf(t, role))
	wantFenced(t, "policy: the controller's unstamped create of a ClusterRole", s, "carries no stamp")
	wantFenced(t, "identity: the deposed leader's create of a ClusterRole", i, podARefused)
	if err := fence.StampTerm(*f.old, role); err != nil {
		t.Fatal(err)
	}
	wantFenced(t, "policy: the deposed leader's stamped create of a ClusterRole", f.stamp.admit(f.a, createOf(t, role)), "stamped for term 4")
	if err := fence.StampTerm(*f.cur, role); err != nil {
		t.Fatal(err)
	}
	s, i = f.both(f.b, createOf(t, role))
	wantAdmitted(t, "policy: the leader's stamped create of a ClusterRole", s)
	wantAdmitted(t, "identity: the leader's create of a ClusterRole", i)

	outside := configMap(t, "team-b", "x", nil)
	s, i = f.both(f.a, createOf(t, outside))
	wantAdmitted(t, "policy: an unstamped create outside Namespaces", s)
	wantAdmitted(t, "identity: the deposed leader's create outside Namespaces", i)
	s, i = f.both(f.a, createOf(t, stampedCM(t, "x", nil)))
	wantFenced(t, "policy: an unstamped create in Namespaces", s, "carries no stamp")
	wantFenced(t, "identity: the deposed leader's create in Namespaces", i, podARefused)

	// A Namespace object is selected by its own labels: one of Namespaces
	// is fenced, another is not.
	for name, fenced := range map[string]bool{celNS: true, "team-b": false} {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{corev1.LabelMetadataName: name}}}
		relabeled := ns.DeepCopy()
		relabeled.Labels["team"] = "x"
		s, i := f.both(f.a, updateOf(t, ns, relabeled))
		if fenced {
			wantFenced(t, "policy: an unstamped update of Namespace "+name, s, "carries no stamp")
			wantFenced(t, "identity: the deposed leader's update of Namespace "+name, i, podARefused)
		} else {
			wantAdmitted(t, "policy: an unstamped update of Namespace "+name, s)
			wantAdmitted(t, "identity: the deposed leader's update of Namespace "+name, i)
		}
	}
}

// Row: the identity policy admits the holder's pod only in the namespace
// the holder runs in (the Lease's, or Config.PodNamespace): a pod of the
// same name in another namespace does not pass for it, even where the
// policy's writers were widened (by hand, or by an older leasehold that
// accepted writers of several namespaces) to that namespace's service
// account.
func TestCELIdentityChecksThePodsNamespace(t *testing.T) {
	vap, b, err := fence.IdentityPolicy(celConfig())
	if err != nil {
		t.Fatal(err)
	}
	intruder := fence.ServiceAccount("team-b", "controller")
	widened := false
	for i, mc := range vap.Spec.MatchConditions {
		if strings.Contains(mc.Expression, "request.userInfo.username in [") {
			vap.Spec.MatchConditions[i].Expression = "request.userInfo.username in [" + strconv.Quote(celWriterName) + ", " + strconv.Quote(intruder) + "]"
			widened = true
		}
	}
	if !widened {
		t.Fatalf("no matchCondition on the writers' usernames in %+v", vap.Spec.MatchConditions)
	}
	s := newAdmissionServer(t, vap, b)
	s.setLease(lease("x_1a2b", 1))
	create := createOf(t, stampedCM(t, "y", nil))
	wantAdmitted(t, "pod team-a/x, holder x_1a2b", s.admit(requester{user: celWriterName, pod: "x"}, create))
	wantFenced(t, "pod team-b/x, holder x_1a2b", s.admit(requester{user: intruder, pod: "x"}, create),
		"system:serviceaccount:team-b:controller is not a service account of namespace team-a")

	// PodNamespace moves the holder's pods to another namespace.
	c := celConfig()
	c.PodNamespace = "ops"
	c.Writers = []string{fence.ServiceAccount("ops", "controller")}
	ops := identityPolicy(t, c, "x_1a2b")
	wantAdmitted(t, "pod ops/x, holder x_1a2b, PodNamespace ops", ops.admit(requester{user: c.Writers[0], pod: "x"}, create))
	wantFenced(t, "pod ops/y, holder x_1a2b, PodNamespace ops", ops.admit(requester{user: c.Writers[0], pod: "y"}, create), "pod y does not hold")
}
