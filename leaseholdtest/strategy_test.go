package leaseholdtest_test

import (
	"context"
	"testing"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/leasehold/leasehold/leaseholdtest"
)

// With the gate on (the default), spec.preferredHolder needs a strategy,
// as kube-apiserver's validation says; both fields are kept.
func TestCoordinatedFieldsGateOn(t *testing.T) {
	ctx := context.Background()
	leases := leaseholdtest.NewServer().Client("a").Leases("ns")
	l := newLease("a")
	l.Spec.PreferredHolder = ptr.To("b")
	if _, err := leases.Create(ctx, l, metav1.CreateOptions{}); !apierrors.IsInvalid(err) {
		t.Fatalf("create with a preferredHolder and no strategy = %v, want 422 Invalid", err)
	}
	l.Spec.Strategy = ptr.To(coordinationv1.OldestEmulationVersion)
	got, err := leases.Create(ctx, l, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if ptr.Deref(got.Spec.PreferredHolder, "") != "b" || got.Spec.Strategy == nil {
		t.Fatalf("the fields were not kept: %+v", got.Spec)
	}
	got.Spec.Strategy = nil
	if _, err := leases.Update(ctx, got, metav1.UpdateOptions{}); !apierrors.IsInvalid(err) {
		t.Fatalf("update dropping the strategy but keeping preferredHolder = %v, want 422 Invalid", err)
	}
}

// With the gate off, creates drop both fields, and updates drop each one
// the stored Lease does not already have.
func TestCoordinatedFieldsGateOff(t *testing.T) {
	ctx := context.Background()
	srv := leaseholdtest.NewServer()
	srv.SetCoordinatedLeaderElection(false)
	leases := srv.Client("a").Leases("ns")
	l := newLease("a")
	l.Spec.Strategy = ptr.To(coordinationv1.OldestEmulationVersion)
	l.Spec.PreferredHolder = ptr.To("b")
	got, err := leases.Create(ctx, l, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got.Spec.Strategy != nil || got.Spec.PreferredHolder != nil {
		t.Fatalf("create kept the fields with the gate off: %+v", got.Spec)
	}
	got.Spec.Strategy = ptr.To(coordinationv1.OldestEmulationVersion)
	got.Spec.PreferredHolder = ptr.To("b")
	if got, err = leases.Update(ctx, got, metav1.UpdateOptions{}); err != nil || got.Spec.Strategy != nil || got.Spec.PreferredHolder != nil {
		t.Fatalf("update = %+v, %v; want both fields dropped", got, err)
	}
	// A Lease stored with a strategy (written while the gate was on) keeps
	// it; preferredHolder is still dropped, as the stored one has none.
	stored := srv.Lease("ns", "l")
	stored.Spec.Strategy = ptr.To(coordinationv1.OldestEmulationVersion)
	stored = srv.Put(stored)
	stored.Spec.PreferredHolder = ptr.To("b")
	got, err = leases.Update(ctx, stored, metav1.UpdateOptions{})
	if err != nil || got.Spec.Strategy == nil || got.Spec.PreferredHolder != nil {
		t.Fatalf("update = %+v, %v; want the strategy kept and preferredHolder dropped", got, err)
	}
}
