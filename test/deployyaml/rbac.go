// Package deployyaml reads the manifests shipped in examples/deploy, so
// that tests on the real control plane apply them exactly as a user would.
package deployyaml

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"
)

// Path is the absolute path of examples/deploy/<name>.
func Path(name string) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "examples", "deploy", name)
}

// RBAC is one ServiceAccount, Role and RoleBinding, as a manifest ships
// them.
type RBAC struct {
	ServiceAccount *corev1.ServiceAccount
	Role           *rbacv1.Role
	RoleBinding    *rbacv1.RoleBinding
}

// ReadRBAC decodes examples/deploy/<name> strictly (a field the API does
// not know fails), and fails on any other kind or a missing one.
func ReadRBAC(name string) (*RBAC, error) {
	path := Path(name)
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	out := &RBAC{}
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(raw)))
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal(doc, &tm); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		var obj any
		switch tm.Kind {
		case "ServiceAccount":
			out.ServiceAccount = &corev1.ServiceAccount{}
			obj = out.ServiceAccount
		case "Role":
			out.Role = &rbacv1.Role{}
			obj = out.Role
		case "RoleBinding":
			out.RoleBinding = &rbacv1.RoleBinding{}
			obj = out.RoleBinding
		case "":
			continue // blank, or comments only
		default:
			return nil, fmt.Errorf("%s: unexpected kind %q", path, tm.Kind)
		}
		if err := yaml.UnmarshalStrict(doc, obj); err != nil {
			return nil, fmt.Errorf("%s: decode %s: %w", path, tm.Kind, err)
		}
	}
	if out.ServiceAccount == nil || out.Role == nil || out.RoleBinding == nil {
		return nil, fmt.Errorf("%s: want a ServiceAccount, a Role and a RoleBinding", path)
	}
	b := out.RoleBinding
	if b.RoleRef.Name != out.Role.Name || len(b.Subjects) != 1 ||
		b.Subjects[0].Kind != rbacv1.ServiceAccountKind || b.Subjects[0].Name != out.ServiceAccount.Name {
		return nil, fmt.Errorf("%s: the RoleBinding does not bind Role %s to ServiceAccount %s", path, out.Role.Name, out.ServiceAccount.Name)
	}
	return out, nil
}

// User is the ServiceAccount's user name in namespace ns, for
// impersonation.
func (m *RBAC) User(ns string) string {
	return "system:serviceaccount:" + ns + ":" + m.ServiceAccount.Name
}

// LeaseName is the one Lease name the Role's rules are scoped to, or ""
// if none or several.
func (m *RBAC) LeaseName() string {
	var name string
	for _, r := range m.Role.Rules {
		for _, n := range r.ResourceNames {
			if name != "" && n != name {
				return ""
			}
			name = n
		}
	}
	return name
}

// Apply creates the three objects in namespace ns, the only change to the
// manifest.
func (m *RBAC) Apply(ctx context.Context, cs kubernetes.Interface, ns string) error {
	sa, role, binding := m.ServiceAccount.DeepCopy(), m.Role.DeepCopy(), m.RoleBinding.DeepCopy()
	sa.Namespace, role.Namespace, binding.Namespace = ns, ns, ns
	for i := range binding.Subjects {
		binding.Subjects[i].Namespace = ns
	}
	if _, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, sa, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create ServiceAccount: %w", err)
	}
	if _, err := cs.RbacV1().Roles(ns).Create(ctx, role, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create Role: %w", err)
	}
	if _, err := cs.RbacV1().RoleBindings(ns).Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create RoleBinding: %w", err)
	}
	return nil
}
