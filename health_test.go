package leasehold

import (
	"context"
	"errors"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/leasehold/leasehold/leaseholdtest"
)

// A write the server refuses for good (a missing namespace, an invalid
// Lease, RBAC) would be retried forever while the process never leads:
// Check reports it, with its cause, once it has lasted LeaseDuration plus
// the tolerance, and not before. The retry log stays rate-limited.
func TestCheckReportsRefusedWrites(t *testing.T) {
	invalid := apierrors.NewInvalid(schema.GroupKind{Group: "coordination.k8s.io", Kind: "Lease"}, testName,
		field.ErrorList{field.Invalid(field.NewPath("metadata", "name"), "My_Lease", "a lowercase RFC 1123 subdomain")})
	for _, tc := range []struct {
		name     string
		err      error
		sentinel error
		cause    string
	}{
		{"namespace missing", apierrors.NewNotFound(schema.GroupResource{Resource: "namespaces"}, testNS), ErrLeaseRefused, `namespace "ns" not found`},
		{"invalid lease (422)", invalid, ErrLeaseRefused, "RFC 1123 subdomain"},
		{"create forbidden", apierrors.NewForbidden(leasesGR, testName, errors.New("denied")), ErrForbidden, `RBAC forbids "create"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {

				h := newHarness(t)
				h.srv.AddHook(func(ctx context.Context, r leaseholdtest.Request) error {
					if r.Verb == "create" {
						return tc.err
					}
					return nil
				})
				a := h.candidate("a").start()
				const tolerance = 5 * time.Second
				h.advanceTo(15*time.Second + tolerance - 500*time.Millisecond)
				if err := a.e.Check(tolerance); err != nil {
					t.Fatalf("Check = %v before LeaseDuration + tolerance of refusals", err)
				}
				h.advance(time.Second)
				err := a.e.Check(tolerance)
				if !errors.Is(err, tc.sentinel) || !strings.Contains(err.Error(), tc.cause) {
					t.Fatalf("Check = %v, want %v naming %q", err, tc.sentinel, tc.cause)
				}
				h.advanceTo(3 * time.Minute)
				n := 0
				for _, l := range a.logs.matching("Cannot acquire the lease") {
					if !strings.Contains(l, `"level"=`) { // error level, not V(4)
						n++
					}
				}
				if n == 0 || n > 4 {
					t.Fatalf("logged %d retry errors in 3 minutes, want the first and then at most one a minute", n)
				}

			})
		})
	}
}

// A refusal ends with the first successful write: Check is healthy again.
func TestCheckRefusalClearsOnSuccess(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {

		h := newHarness(t)
		refuse := true
		h.srv.AddHook(func(ctx context.Context, r leaseholdtest.Request) error {
			if refuse && r.Verb == "create" {
				return apierrors.NewNotFound(schema.GroupResource{Resource: "namespaces"}, testNS)
			}
			return nil
		})
		a := h.candidate("a").start()
		h.advance(30 * time.Second)
		if err := a.e.Check(0); !errors.Is(err, ErrLeaseRefused) {
			t.Fatalf("Check = %v, want ErrLeaseRefused", err)
		}
		refuse = false
		h.advance(10 * time.Second)
		a.waitLeader()
		if err := a.e.Check(0); err != nil {
			t.Fatalf("Check = %v after the namespace appeared", err)
		}

	})
}
