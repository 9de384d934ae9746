package fence

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/leasehold/leasehold"
)

var term = leasehold.Term{Lease: "ns/lease", Holder: "pod-a", Transitions: 12, UID: "0b7c6f3e-uid"}

func TestStampTermSetsTheStampAndKeepsOtherAnnotations(t *testing.T) {
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{
		"keep":           "me",
		HolderAnnotation: "pod-old", TermAnnotation: "3", LeaseUIDAnnotation: "old-uid",
	}}}
	if err := StampTerm(term, cm); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"keep": "me", HolderAnnotation: "pod-a", TermAnnotation: "12", LeaseUIDAnnotation: "0b7c6f3e-uid"}
	if !reflect.DeepEqual(cm.Annotations, want) {
		t.Errorf("annotations %v; want %v", cm.Annotations, want)
	}
}

func TestStampTermOnUnstructuredWithoutAnnotations(t *testing.T) {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(schema.GroupVersionKind{Version: "v1", Kind: "ConfigMap"})
	if err := StampTerm(term, u); err != nil {
		t.Fatal(err)
	}
	if got := u.GetAnnotations()[TermAnnotation]; got != "12" {
		t.Errorf("term annotation %q; want 12", got)
	}
}

func TestStampTermRefusesIncompleteTerms(t *testing.T) {
	for name, bad := range map[string]leasehold.Term{
		"no holder":     {Lease: "ns/l", Transitions: 1, UID: "u"},
		"blank holder":  {Lease: "ns/l", Holder: " ", Transitions: 1, UID: "u"},
		"no Lease UID":  {Lease: "ns/l", Holder: "a", Transitions: 1},
		"the zero term": {},
	} {
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{"keep": "me"}}}
		err := StampTerm(bad, cm)
		if !errors.Is(err, ErrInvalidTerm) {
			t.Errorf("%s: got %v; want ErrInvalidTerm", name, err)
		}
		if len(cm.Annotations) != 1 {
			t.Errorf("%s: obj changed on error: %v", name, cm.Annotations)
		}
		if _, err := TermAnnotations(bad); !errors.Is(err, ErrInvalidTerm) {
			t.Errorf("%s: TermAnnotations: got %v; want ErrInvalidTerm", name, err)
		}
	}
}

func TestStampNeedsATermInTheContext(t *testing.T) {
	cm := &corev1.ConfigMap{}
	if err := Stamp(context.Background(), cm); !errors.Is(err, ErrNoTerm) {
		t.Errorf("Stamp without a term: %v; want ErrNoTerm", err)
	}
	if cm.Annotations != nil {
		t.Errorf("obj changed: %v", cm.Annotations)
	}
	if _, err := Annotations(context.Background()); !errors.Is(err, ErrNoTerm) {
		t.Errorf("Annotations without a term: %v; want ErrNoTerm", err)
	}
}

func TestTermAnnotationsIsANewMap(t *testing.T) {
	a, err := TermAnnotations(term)
	if err != nil {
		t.Fatal(err)
	}
	a[HolderAnnotation] = "changed"
	b, _ := TermAnnotations(term)
	if b[HolderAnnotation] != "pod-a" || len(b) != 3 {
		t.Errorf("TermAnnotations shares its map: %v", b)
	}
	neg, _ := TermAnnotations(leasehold.Term{Holder: "a", UID: "u", Transitions: -1})
	if neg[TermAnnotation] != "-1" {
		t.Errorf("negative transitions rendered %q", neg[TermAnnotation])
	}
}

func TestIsFenced(t *testing.T) {
	gr := schema.GroupResource{Resource: "configmaps"}
	forbidden := func(msg string) error { return apierrors.NewForbidden(gr, "x", errors.New(msg)) }
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"a policy refusal", forbidden("ValidatingAdmissionPolicy 'p' with binding 'p' denied request: leasehold fence: the write is stamped for term 1 of a"), true},
		{"wrapped", fmt.Errorf("sync: %w", forbidden("denied request: leasehold fence: pod a does not hold Lease ns/l")), true},
		{"RBAC forbidden", forbidden(`User "x" cannot update resource "configmaps"`), false},
		{"422 with the prefix", apierrors.NewInvalid(schema.GroupKind{Kind: "ConfigMap"}, "x", nil), false},
		{"not an API error", errors.New("leasehold fence: made up"), false},
	} {
		if got := IsFenced(tc.err); got != tc.want {
			t.Errorf("%s: IsFenced = %v; want %v", tc.name, got, tc.want)
		}
	}
}
