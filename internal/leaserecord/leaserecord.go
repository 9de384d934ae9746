// Package leaserecord reads the fields of a coordination.k8s.io/v1 Lease that
// an election writes, and orders Lease versions, the same way for the
// election (the root package), shard and the kubectl plugin.
package leaserecord

import (
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	"k8s.io/apimachinery/pkg/util/resourceversion"
)

// Holder returns the Lease's holder identity, "" if none or nil.
func Holder(lease *coordinationv1.Lease) string {
	if lease == nil || lease.Spec.HolderIdentity == nil {
		return ""
	}
	return *lease.Spec.HolderIdentity
}

// ClaimDuration is how long the holder's claim lasts after a change: the
// holder's own leaseDurationSeconds when it is positive, else fallback
// (the reader's own LeaseDuration), so that a missing or nonsense value
// never shortens the wait.
func ClaimDuration(lease *coordinationv1.Lease, fallback time.Duration) time.Duration {
	if lease == nil || lease.Spec.LeaseDurationSeconds == nil || *lease.Spec.LeaseDurationSeconds <= 0 {
		return fallback
	}
	return time.Duration(*lease.Spec.LeaseDurationSeconds) * time.Second
}

// Transitions returns leaseTransitions, 0 if unset.
func Transitions(lease *coordinationv1.Lease) int32 {
	if lease == nil || lease.Spec.LeaseTransitions == nil {
		return 0
	}
	return *lease.Spec.LeaseTransitions
}

// NewerVersion reports whether resourceVersion a is newer than b ("" is
// older than anything). Kubernetes resourceVersions are comparable
// integers (KEP-5504); if either is not well formed, any difference
// counts as newer.
func NewerVersion(a, b string) bool {
	if b == "" {
		return a != ""
	}
	c, err := resourceversion.CompareResourceVersion(a, b)
	if err != nil {
		return a != b
	}
	return c > 0
}
