package fencing

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/leasehold/leasehold/fence"
)

var updateYAML = flag.Bool("update", false, "rewrite examples/deploy/fencing-*.yaml from the fence package")

// The example's Lease and service account (examples/deploy/rbac.yaml).
const (
	exampleNS    = "default"
	exampleLease = "example"
	exampleSA    = "leader-election-example"
)

// deployFile is one YAML file under examples/deploy, generated from the
// fence package.
type deployFile struct {
	name   string
	header string
	build  func(fence.Config) (*admissionregistrationv1.ValidatingAdmissionPolicy, *admissionregistrationv1.ValidatingAdmissionPolicyBinding, error)
}

var exampleConfig = fence.Config{
	Lease:      exampleNS + "/" + exampleLease,
	Writers:    []string{fence.ServiceAccount(exampleNS, exampleSA)},
	Resources:  []fence.Resource{{Group: "", Resource: "configmaps"}},
	Namespaces: []string{exampleNS},
}

const generated = `# Generated from the fence package (github.com/leasehold/leasehold/fence)
# by: cd test && go test ./fencing -run TestDeployYAML -update
# Do not edit: change the Go, then regenerate.
#
`

var deployFiles = []deployFile{
	{
		name: "fencing-policy.yaml",
		header: generated + `# fence.Policy: the Lease default/example fences the ConfigMap writes of
# the service account default/leader-election-example in namespace
# default. A create or update is admitted only if the object carries the
# stamp (fence.Stamp) of the Lease's current term:
#   fence.leasehold.dev/holder    == spec.holderIdentity (set)
#   fence.leasehold.dev/term      == spec.leaseTransitions
#   fence.leasehold.dev/lease-uid == metadata.uid
# Unstamped writes by that service account are refused; deletes are not
# fenced (see fencing-identity-policy.yaml). Writes by anyone else pass.
#
# Apply as a user who may "get" the Lease; the policy comes before its
# binding. The controller needs RBAC for the writes it makes (rbac.yaml
# grants it none on ConfigMaps). The API server reads the Lease through a
# cache: see fence/README.md for what is and is not guaranteed.
`,
		build: fence.Policy,
	},
	{
		name: "fencing-identity-policy.yaml",
		header: generated + `# fence.IdentityPolicy: the Lease default/example fences the ConfigMap
# writes (creates, updates and deletes) of the service account
# default/leader-election-example in namespace default by pod: a write is
# admitted only from the pod that holds the Lease, as named by the
# request's authentication.kubernetes.io/pod-name (set for the pod-bound
# token every pod gets). The holder must be the pod's name, or
# "<pod name>_<anything>": leasehold.DefaultIdentity ("<hostname>_<random>",
# the example's default) qualifies when the pod's hostname is its name
# (no spec.hostname, name of 63 characters or less); otherwise pass the
# pod name as -id (downward API, metadata.name).
#
# Apply as a user who may "get" the Lease; the policy comes before its
# binding. The controller needs RBAC for the writes it makes (rbac.yaml
# grants it none on ConfigMaps).
`,
		build: fence.IdentityPolicy,
	},
}

// render returns the file's contents: its header, the policy and the
// binding.
func (f deployFile) render() ([]byte, error) {
	vap, binding, err := f.build(exampleConfig)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	b.WriteString(f.header)
	for i, obj := range []runtime.Object{vap, binding} {
		u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
		if err != nil {
			return nil, err
		}
		// Fields the API server sets, empty here.
		delete(u, "status")
		if md, ok := u["metadata"].(map[string]any); ok {
			delete(md, "creationTimestamp")
		}
		y, err := yaml.Marshal(u)
		if err != nil {
			return nil, err
		}
		if i > 0 {
			b.WriteString("---\n")
		}
		b.Write(y)
	}
	return b.Bytes(), nil
}

func (f deployFile) path() string { return filepath.Join("..", "..", "examples", "deploy", f.name) }

// The YAML under examples/deploy is what the Go functions return.
// Regenerate it with -update.
func TestDeployYAMLUpToDate(t *testing.T) {
	for _, f := range deployFiles {
		want, err := f.render()
		if err != nil {
			t.Fatalf("%s: %v", f.name, err)
		}
		if *updateYAML {
			if err := os.WriteFile(f.path(), want, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(f.path())
		if err != nil {
			t.Fatalf("%v (generate it: cd test && go test ./fencing -run TestDeployYAML -update)", err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s differs from what the fence package generates; regenerate it: cd test && go test ./fencing -run TestDeployYAML -update", f.path())
		}
	}
}

// decodeDeployFile reads a generated file back into typed objects,
// strictly: a field the API does not know fails.
func decodeDeployFile(t *testing.T, f deployFile) (*admissionregistrationv1.ValidatingAdmissionPolicy, *admissionregistrationv1.ValidatingAdmissionPolicyBinding) {
	t.Helper()
	raw, err := os.ReadFile(f.path())
	if err != nil {
		t.Fatal(err)
	}
	var vap *admissionregistrationv1.ValidatingAdmissionPolicy
	var binding *admissionregistrationv1.ValidatingAdmissionPolicyBinding
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(raw)))
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: %v", f.name, err)
		}
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal(doc, &tm); err != nil {
			t.Fatalf("%s: %v", f.name, err)
		}
		var into any
		switch tm.Kind {
		case "ValidatingAdmissionPolicy":
			vap = &admissionregistrationv1.ValidatingAdmissionPolicy{}
			into = vap
		case "ValidatingAdmissionPolicyBinding":
			binding = &admissionregistrationv1.ValidatingAdmissionPolicyBinding{}
			into = binding
		case "":
			continue
		default:
			t.Fatalf("%s: unexpected kind %q", f.name, tm.Kind)
		}
		if err := yaml.UnmarshalStrict(doc, into); err != nil {
			t.Fatalf("%s: %s: %v", f.name, tm.Kind, err)
		}
	}
	if vap == nil || binding == nil {
		t.Fatalf("%s: want a ValidatingAdmissionPolicy and its binding", f.name)
	}
	return vap, binding
}

// The YAML files, applied as they are, fence the example's writes on the
// real API server.
func TestDeployYAMLEnforced(t *testing.T) {
	shared.Get(t)
	ctx := context.Background()
	stampVAP, stampBinding := decodeDeployFile(t, deployFiles[0])
	idVAP, idBinding := decodeDeployFile(t, deployFiles[1])
	for _, f := range deployFiles {
		vap, binding := decodeDeployFile(t, f)
		wantVAP, wantBinding, _ := f.build(exampleConfig)
		if !equality.Semantic.DeepEqual(vap, wantVAP) || !equality.Semantic.DeepEqual(binding, wantBinding) {
			t.Errorf("%s does not decode to what the fence package returns", f.name)
		}
	}

	sa := fence.ServiceAccount(exampleNS, exampleSA)
	grantConfigMaps(t, exampleNS, exampleSA)
	lease := setLease(t, exampleNS, exampleLease, "pod-a_3c9d2e1f0a", 7)
	t.Cleanup(func() {
		_ = admin.CoordinationV1().Leases(exampleNS).Delete(context.Background(), exampleLease, metav1.DeleteOptions{})
	})
	cur := termOf(lease)
	stale := cur
	stale.Transitions--
	dry := metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}

	// The stamp policy (no pod name: the identity policy is not installed
	// yet).
	w := clientAs(sa, "").CoreV1().ConfigMaps(exampleNS)
	install(t, stampVAP, stampBinding, func() error {
		_, err := w.Create(ctx, configMap(t, exampleNS, "probe", &stale), dry)
		return err
	})
	_, err := w.Create(ctx, configMap(t, exampleNS, "probe", &cur), dry)
	wantAdmitted(t, fmt.Sprintf("%s: write stamped with the current term", deployFiles[0].name), err)
	_, err = w.Create(ctx, configMap(t, exampleNS, "probe", &stale), dry)
	wantFenced(t, fmt.Sprintf("%s: write stamped with an old term", deployFiles[0].name), err, "is in term 7 of pod-a_3c9d2e1f0a")

	// Both: the holder's pod may write stamped objects; another pod may
	// not, even with the current stamp.
	podA := clientAs(sa, "pod-a").CoreV1().ConfigMaps(exampleNS)
	install(t, idVAP, idBinding, func() error {
		// Stamped with the current term: only the identity policy refuses.
		_, err := clientAs(sa, "pod-b").CoreV1().ConfigMaps(exampleNS).Create(ctx, configMap(t, exampleNS, "probe", &cur), dry)
		return err
	})
	_, err = podA.Create(ctx, configMap(t, exampleNS, "probe", &cur), dry)
	wantAdmitted(t, "both files: the holder pod's write stamped with the current term", err)
	_, err = clientAs(sa, "pod-b").CoreV1().ConfigMaps(exampleNS).Create(ctx, configMap(t, exampleNS, "probe", &cur), dry)
	wantFenced(t, fmt.Sprintf("%s: another pod's write", deployFiles[1].name), err, "pod pod-b does not hold Lease default/example")
}

// grantConfigMaps lets the service account write ConfigMaps in ns until
// the test ends.
func grantConfigMaps(t *testing.T, ns, sa string) {
	t.Helper()
	ctx := context.Background()
	name := "fencing-test-configmaps"
	_, err := admin.RbacV1().Roles(ns).Create(ctx, &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Rules:      []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"*"}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = admin.RbacV1().RoleBindings(ns).Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: sa, Namespace: ns}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = admin.RbacV1().RoleBindings(ns).Delete(context.Background(), name, metav1.DeleteOptions{})
		_ = admin.RbacV1().Roles(ns).Delete(context.Background(), name, metav1.DeleteOptions{})
	})
}
