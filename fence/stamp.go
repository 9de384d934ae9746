package fence

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/leasehold/leasehold"
)

// The stamp: three annotations that name the term a write was made in.
// They are part of the API: the policies returned by Policy read them,
// and any other store may check them the same way.
const (
	// HolderAnnotation holds the identity of the leader that wrote the
	// object (Term.Holder), as written in the Lease's
	// spec.holderIdentity.
	HolderAnnotation = "fence.leasehold.dev/holder"
	// TermAnnotation holds the term's fencing token (Term.Transitions),
	// the Lease's spec.leaseTransitions, in decimal.
	TermAnnotation = "fence.leasehold.dev/term"
	// LeaseUIDAnnotation holds the UID of the Lease object the term was
	// won on (Term.UID). A Lease that is deleted and re-created starts
	// counting transitions again; its new UID keeps a stamp from the old
	// object from matching.
	LeaseUIDAnnotation = "fence.leasehold.dev/lease-uid"
)

// refusalPrefix starts every message with which the policies refuse a
// write; IsFenced looks for it.
const refusalPrefix = "leasehold fence: "

// ErrNoTerm is returned by Stamp and Annotations when their ctx carries no
// leadership term: ctx is not (derived from) the one OnStartedLeading
// received.
var ErrNoTerm = errors.New("fence: the context carries no leadership term")

// ErrInvalidTerm is returned, wrapped, by StampTerm for a term that names
// no holder or no Lease UID, which no Lease can match.
var ErrInvalidTerm = errors.New("fence: incomplete term")

// Stamp sets the stamp of the term carried by ctx on obj: the annotations
// HolderAnnotation, TermAnnotation and LeaseUIDAnnotation, replacing any
// stamp obj already carries and keeping its other annotations. ctx must be
// the ctx OnStartedLeading received, or one derived from it; otherwise
// Stamp returns ErrNoTerm and leaves obj as it was.
//
// Stamp every write that a policy fences, patches included (see
// Annotations): the API server checks the object as it would be stored,
// so a write that sets no stamp is checked with the one already stored,
// which may be the current leader's. Stamp changes obj: stamp a copy, never
// an object shared with an informer's cache.
//
// Stamp does not check ctx.Err(): a write stamped after the term ended is
// exactly what the policy refuses.
func Stamp(ctx context.Context, obj metav1.Object) error {
	t, ok := leasehold.TermFromContext(ctx)
	if !ok {
		return ErrNoTerm
	}
	return StampTerm(t, obj)
}

// StampTerm is Stamp for a term obtained some other way, such as
// Elector.Term. It returns an error wrapping ErrInvalidTerm, and leaves obj
// as it was, if t has no Holder or no UID.
func StampTerm(t leasehold.Term, obj metav1.Object) error {
	a, err := TermAnnotations(t)
	if err != nil {
		return err
	}
	merged := obj.GetAnnotations()
	if merged == nil {
		merged = make(map[string]string, len(a))
	}
	for k, v := range a {
		merged[k] = v
	}
	obj.SetAnnotations(merged)
	return nil
}

// Annotations returns the stamp of the term carried by ctx as a new map,
// for writes that do not go through a metav1.Object: merge patches, JSON
// patches, and server-side apply configurations (WithAnnotations). Its
// errors are Stamp's.
func Annotations(ctx context.Context) (map[string]string, error) {
	t, ok := leasehold.TermFromContext(ctx)
	if !ok {
		return nil, ErrNoTerm
	}
	return TermAnnotations(t)
}

// TermAnnotations is Annotations for a term obtained some other way. Its
// errors are StampTerm's.
func TermAnnotations(t leasehold.Term) (map[string]string, error) {
	switch {
	case strings.TrimSpace(t.Holder) == "":
		return nil, fmt.Errorf("%w: term %s has no holder", ErrInvalidTerm, t)
	case t.UID == "":
		return nil, fmt.Errorf("%w: term %s has no Lease UID", ErrInvalidTerm, t)
	}
	return map[string]string{
		HolderAnnotation:   t.Holder,
		TermAnnotation:     strconv.FormatInt(int64(t.Transitions), 10),
		LeaseUIDAnnotation: string(t.UID),
	}, nil
}

// IsFenced reports whether err is the API server refusing a write because
// a policy from this package found that the writer's term, or its pod, is
// not the Lease's current holder: a 403 Forbidden whose message starts,
// after the API server's own prefix, with "leasehold fence: ".
//
// A fenced write must not be retried with the same stamp: the term is
// over, and the work should return. One exception is a new leader's first
// writes, which the API server may refuse for a few milliseconds after
// the takeover while its copy of the Lease catches up; retrying those,
// with backoff, is safe, since a stamp is never admitted once its term
// has been superseded in the server's copy.
//
// A write refused because the Lease does not exist is not reported: the
// API server refuses it as a configuration error of the binding (422
// Invalid, "no params found").
func IsFenced(err error) bool {
	var status apierrors.APIStatus
	if !errors.As(err, &status) {
		return false
	}
	s := status.Status()
	return s.Reason == metav1.StatusReasonForbidden && strings.Contains(s.Message, refusalPrefix)
}
