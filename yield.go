package leasehold

import (
	"context"
	"errors"
	"fmt"
	"strings"

	coordinationv1 "k8s.io/api/coordination/v1"

	"github.com/leasehold/leasehold/internal/leaserecord"
)

// PreferredHolderAnnotation, set on a Lease, asks its leader to hand the
// Lease over to the identity it names; the value "*" (or "") names
// anyone. Any writer may set it, so an operator can move leadership
// without code:
//
//	kubectl annotate lease my-controller leasehold.dev/preferred-holder=pod-b
//
// The leader then yields as Elector.Yield does. It works on every
// cluster, unlike spec.preferredHolder, which the API server drops unless
// the CoordinatedLeaderElection feature gate is on; leasehold honours
// spec.preferredHolder too where the server keeps it. A yield writes the
// successor in spec.preferredHolder as well only on a Lease that has a
// spec.strategy (kube-apiserver refuses the field without one), and stops
// once the server is seen to drop it. The successor removes both when it
// takes the Lease.
const PreferredHolderAnnotation = "leasehold.dev/preferred-holder"

// anySuccessor is the annotation value that names anyone.
const anySuccessor = "*"

// yieldRequest asks the current term to hand the Lease over.
type yieldRequest struct {
	to   string     // the successor; "" for anyone
	done chan error // receives the outcome; nil for an annotation yield
}

// errYielded ends a term that handed the Lease over on purpose.
var errYielded = errors.New("leasehold: yielded")

// Yield hands leadership over to the candidate whose identity is to, or
// to whichever candidate is first when to is "". The leader cancels its
// work, keeps renewing until OnStartedLeading has returned, then releases
// the Lease naming the successor in PreferredHolderAnnotation. The
// successor, watching, takes the Lease within milliseconds; every other
// candidate defers to it for up to one lease duration, then competes as
// usual.
//
// Yield returns nil once the Lease is released with the successor named.
// It returns an error wrapping ErrNotLeading if this process does not
// lead, ctx's error if ctx ends first (the yield goes on), and an error
// wrapping ErrLeaderLost or ErrStepDownTimeout if the term ended another
// way, or an error wrapping ErrLeaseRefused or ErrForbidden, within
// RequestTimeout, if the API server refused the release for good (the
// Lease then expires on its own).
//
// After a yield, Run follows again, whatever Config.Rejoin says: a yield
// moves leadership, not the process. The yielder sits out, writing
// nothing, until another candidate writes the Lease or, failing that,
// until the successor's chance has passed: one lease duration after the
// release, or after the Lease expired if the release failed.
func (e *Elector) Yield(ctx context.Context, to string) error {
	if to = strings.TrimSpace(to); to == anySuccessor {
		to = ""
	}
	if to != "" && to == e.lock.Identity {
		return fmt.Errorf("leasehold: Yield to %q: that is this process's own identity; name another candidate, or \"\" for anyone", to)
	}
	cur := e.currentTerm()
	if cur == nil || !e.IsLeader() {
		return fmt.Errorf("%w: %s: Yield called while not leading", ErrNotLeading, e.cfg.Name)
	}
	done := make(chan error, 1)
	req := &yieldRequest{to: to, done: done}
	select {
	case cur.yields <- req:
	case <-ctx.Done():
		return ctx.Err()
	case <-cur.ended:
		return fmt.Errorf("%w: %s: the term ended before the yield began", ErrNotLeading, e.cfg.Name)
	}
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// preferredSuccessor returns the successor a held Lease asks its leader,
// self, to yield to ("" for anyone), and whether it asks at all. A
// preference naming the leader itself asks nothing.
func preferredSuccessor(lease *coordinationv1.Lease, self string) (string, bool) {
	to, ok := preferredHolder(lease)
	if !ok || to == self {
		return "", false
	}
	return to, true
}

// preferredHolder returns the preference written on a Lease: the
// annotation if present ("" for anyone), else spec.preferredHolder.
func preferredHolder(lease *coordinationv1.Lease) (string, bool) {
	if lease == nil {
		return "", false
	}
	if v, ok := lease.Annotations[PreferredHolderAnnotation]; ok {
		v = strings.TrimSpace(v)
		if v == anySuccessor {
			v = ""
		}
		return v, true
	}
	if p := lease.Spec.PreferredHolder; p != nil && *p != "" {
		return *p, true
	}
	return "", false
}

// namesUs reports whether lease is released naming self as the successor.
func namesUs(lease *coordinationv1.Lease, self string) bool {
	to, ok := preferredHolder(lease)
	return ok && to == self && leaserecord.Holder(lease) == ""
}
