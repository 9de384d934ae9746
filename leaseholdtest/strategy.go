package leaseholdtest

import (
	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// SetCoordinatedLeaderElection makes the server treat spec.strategy and
// spec.preferredHolder as kube-apiserver does with its
// CoordinatedLeaderElection feature gate on or off.
//
// On (NewServer's default), both fields are kept, and a create or update
// that sets a preferredHolder without a strategy is refused with 422
// Invalid, as kube-apiserver's validation does.
//
// Off (kube-apiserver's default), a create drops both fields; an update
// drops strategy unless the stored Lease has one, and preferredHolder
// unless the stored Lease has one. Nothing is refused: the fields just do
// not arrive, as on most clusters.
//
// Server.Put stores its Lease as given either way.
func (s *Server) SetCoordinatedLeaderElection(enabled bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gateOff = !enabled
}

// prepareLocked applies the coordinated-election fields' rules to lease,
// about to replace old (nil for a create). It returns 422 Invalid for a
// Lease the API server would refuse. s.mu must be held.
func (s *Server) prepareLocked(lease, old *coordinationv1.Lease) error {
	if s.gateOff {
		if old == nil || old.Spec.Strategy == nil {
			lease.Spec.Strategy = nil
		}
		if old == nil || old.Spec.PreferredHolder == nil {
			lease.Spec.PreferredHolder = nil
		}
		return nil
	}
	spec := lease.Spec
	if spec.PreferredHolder != nil && *spec.PreferredHolder != "" && (spec.Strategy == nil || *spec.Strategy == "") {
		return apierrors.NewInvalid(coordinationv1.SchemeGroupVersion.WithKind("Lease").GroupKind(), lease.Name, field.ErrorList{
			field.Forbidden(field.NewPath("spec", "preferredHolder"), "may only be specified if `strategy` is defined"),
		})
	}
	return nil
}
