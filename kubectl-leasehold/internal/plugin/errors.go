package plugin

import (
	"context"
	"errors"
	"fmt"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	utilnet "k8s.io/apimachinery/pkg/util/net"
	"k8s.io/client-go/kubernetes"
)

// hintError is an error followed by a line that says how to fix it.
type hintError struct {
	err  error
	hint string
}

func (e *hintError) Error() string { return e.err.Error() + "\n" + e.hint }
func (e *hintError) Unwrap() error { return e.err }

// leaseRef names a Lease in messages.
func leaseRef(ns, name string) string { return ns + "/" + name }

// apiError turns err, returned by the API server for verb on Leases in ns
// (all namespaces if ns is ""), into an error that names the fix. verb is
// an RBAC verb: get, list, watch, patch.
func apiError(err error, verb, ns string) error {
	if err == nil {
		return nil
	}
	where := fmt.Sprintf("in namespace %q", ns)
	scope, role := "-n "+ns, "a Role in namespace "+ns
	if ns == "" {
		where, scope, role = "in all namespaces", "-A", "a ClusterRole (bound with a ClusterRoleBinding)"
	}
	switch {
	case apierrors.IsForbidden(err):
		return &hintError{
			err: fmt.Errorf("RBAC forbids you to %s Leases %s: %w", verb, where, err),
			hint: fmt.Sprintf("Fix: ask for %s granting %q on leases (apiGroups: [coordination.k8s.io]); check with 'kubectl auth can-i %s leases.coordination.k8s.io %s'.",
				role, verb, verb, scope),
		}
	case apierrors.IsUnauthorized(err):
		return &hintError{
			err:  fmt.Errorf("the API server rejected your credentials: %w", err),
			hint: "Fix: log in again or refresh the credentials of your kubeconfig's user (check with 'kubectl auth whoami').",
		}
	case utilnet.IsConnectionRefused(err) || isTimeout(err) || strings.Contains(err.Error(), "no such host"):
		return &hintError{
			err:  fmt.Errorf("cannot reach the API server: %w", err),
			hint: "Fix: check that the cluster is up and that --context (or the current context) points at it ('kubectl config current-context').",
		}
	}
	return fmt.Errorf("%s Leases %s: %w", verb, where, err)
}

func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}

// notFound is the error for a Lease that is not there. It looks for Leases
// of that name in other namespaces (if the user may list them) to suggest
// the right -n.
func notFound(ctx context.Context, client kubernetes.Interface, ns, name string) error {
	err := fmt.Errorf("lease %q not found in namespace %q", name, ns)
	list, lerr := client.CoordinationV1().Leases(metav1.NamespaceAll).List(ctx, metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("metadata.name", name).String(),
	})
	var elsewhere []string
	if lerr == nil {
		for _, l := range list.Items {
			if l.Name == name && l.Namespace != ns {
				elsewhere = append(elsewhere, l.Namespace)
			}
		}
	}
	switch {
	case len(elsewhere) == 1:
		return &hintError{err: err, hint: fmt.Sprintf("Fix: a Lease named %q exists in namespace %s: pass -n %s.", name, elsewhere[0], elsewhere[0])}
	case len(elsewhere) > 1:
		return &hintError{err: err, hint: fmt.Sprintf("Fix: Leases named %q exist in namespaces %s: pass -n with one of them.", name, strings.Join(elsewhere, ", "))}
	}
	return &hintError{err: err, hint: fmt.Sprintf("Fix: check the name and the namespace; 'kubectl leasehold status -n %s' lists the Leases there, 'kubectl leasehold status -A' all of them.", ns)}
}
