package fencing

import (
	"testing"

	coordinationv1 "k8s.io/api/coordination/v1"
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
	wantAdmitted(t, "create stamped with the current term", s.admit(w, createCM(configMap(t, celNS, "x", cur))))
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
		wantFenced(t, "create stamped with "+tc.name, s.admit(w, createCM(configMap(t, celNS, "x", tc.stamp))), tc.subs...)
	}
}
