package fence

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func validConfig() Config {
	return Config{
		Lease:     "team-a/my-controller",
		Writers:   []string{ServiceAccount("team-a", "my-controller")},
		Resources: []Resource{{Group: "", Resource: "configmaps"}, {Group: "apps", Versions: []string{"v1"}, Resource: "deployments"}},
	}
}

func TestPolicyObjects(t *testing.T) {
	vap, b, err := Policy(validConfig())
	if err != nil {
		t.Fatal(err)
	}
	if vap.Name != "leasehold-fence.team-a.my-controller" || b.Name != vap.Name || b.Spec.PolicyName != vap.Name {
		t.Errorf("names: policy %q, binding %q for policy %q", vap.Name, b.Name, b.Spec.PolicyName)
	}
	if vap.Kind != "ValidatingAdmissionPolicy" || b.Kind != "ValidatingAdmissionPolicyBinding" || vap.APIVersion != "admissionregistration.k8s.io/v1" {
		t.Errorf("type meta: %v, %v", vap.TypeMeta, b.TypeMeta)
	}
	if pk := vap.Spec.ParamKind; pk == nil || pk.APIVersion != "coordination.k8s.io/v1" || pk.Kind != "Lease" {
		t.Errorf("paramKind %v; want coordination.k8s.io/v1 Lease", pk)
	}
	want := &admissionregistrationv1.ParamRef{Name: "my-controller", Namespace: "team-a", ParameterNotFoundAction: ptrTo(admissionregistrationv1.DenyAction)}
	if !reflect.DeepEqual(b.Spec.ParamRef, want) {
		t.Errorf("paramRef %+v; want %+v", b.Spec.ParamRef, want)
	}
	if !reflect.DeepEqual(b.Spec.ValidationActions, []admissionregistrationv1.ValidationAction{admissionregistrationv1.Deny}) {
		t.Errorf("validationActions %v; want [Deny]", b.Spec.ValidationActions)
	}
	if fp := vap.Spec.FailurePolicy; fp == nil || *fp != admissionregistrationv1.Fail {
		t.Errorf("failurePolicy %v; want Fail", fp)
	}
	rules := vap.Spec.MatchConstraints.ResourceRules
	if len(rules) != 2 {
		t.Fatalf("%d resource rules; want 2", len(rules))
	}
	for _, r := range rules {
		if !reflect.DeepEqual(r.Operations, []admissionregistrationv1.OperationType{"CREATE", "UPDATE"}) {
			t.Errorf("operations %v; want CREATE, UPDATE (deletes carry no stamp)", r.Operations)
		}
		if *r.Scope != admissionregistrationv1.AllScopes {
			t.Errorf("scope %v without Namespaces; want *", *r.Scope)
		}
	}
	if got := rules[0].APIVersions; !reflect.DeepEqual(got, []string{"*"}) {
		t.Errorf("default versions %v; want [*]", got)
	}
	if got := rules[1]; !reflect.DeepEqual(got.APIGroups, []string{"apps"}) || !reflect.DeepEqual(got.APIVersions, []string{"v1"}) || !reflect.DeepEqual(got.Resources, []string{"deployments"}) {
		t.Errorf("rule %+v; want apps/v1 deployments", got.Rule)
	}
	if vap.Spec.MatchConstraints.NamespaceSelector != nil || vap.Spec.MatchConstraints.ExcludeResourceRules != nil {
		t.Errorf("unexpected namespace selector or exclusions: %+v", vap.Spec.MatchConstraints)
	}
	if got := vap.Spec.MatchConditions; len(got) != 1 || got[0].Expression != `request.userInfo.username in ["system:serviceaccount:team-a:my-controller"]` {
		t.Errorf("matchConditions %+v", got)
	}
	if n := len(vap.Spec.Validations); n != 2 {
		t.Errorf("%d validations; want 2 (unstamped, then stale)", n)
	}
	for _, v := range vap.Spec.Validations {
		if v.Reason == nil || *v.Reason != metav1.StatusReasonForbidden || !strings.HasPrefix(v.Message, refusalPrefix) {
			t.Errorf("validation %q: reason %v, message %q; want Forbidden and the refusal prefix", v.Expression, v.Reason, v.Message)
		}
	}
}

func TestPolicyAllowUnstampedRelaxesOnlyTheUnstampedRule(t *testing.T) {
	c := validConfig()
	strict, _, _ := Policy(c)
	c.AllowUnstamped = true
	lax, _, err := Policy(c)
	if err != nil {
		t.Fatal(err)
	}
	if len(lax.Spec.Validations) != 2 || !reflect.DeepEqual(lax.Spec.Validations[1], strict.Spec.Validations[1]) {
		t.Fatalf("validations with AllowUnstamped: %+v; want the unstamped rule relaxed, then the stale rule as without", lax.Spec.Validations)
	}
	// Unstamped writes pass only where no stamp is stored: the relaxed
	// rule still refuses a write that removes one.
	if got := lax.Spec.Validations[0].Expression; got != "variables.stamped || !variables.oldStamped" {
		t.Errorf("unstamped rule with AllowUnstamped: %q", got)
	}
	if got := strict.Spec.Validations[0].Expression; got != "variables.stamped" {
		t.Errorf("unstamped rule: %q", got)
	}
}

func TestIdentityPolicyObjects(t *testing.T) {
	c := validConfig()
	c.Resources = append(c.Resources, Resource{Group: "apps", Resource: "deployments/status"})
	vap, b, err := IdentityPolicy(c)
	if err != nil {
		t.Fatal(err)
	}
	if vap.Name != "leasehold-fence-identity.team-a.my-controller" || b.Spec.PolicyName != vap.Name {
		t.Errorf("names: %q, %q", vap.Name, b.Spec.PolicyName)
	}
	for _, r := range vap.Spec.MatchConstraints.ResourceRules {
		if !reflect.DeepEqual(r.Operations, []admissionregistrationv1.OperationType{"CREATE", "UPDATE", "DELETE"}) {
			t.Errorf("operations %v; want CREATE, UPDATE, DELETE", r.Operations)
		}
	}
	if got := vap.Spec.MatchConstraints.ResourceRules[2].Resources; !reflect.DeepEqual(got, []string{"deployments/status"}) {
		t.Errorf("subresource rule %v", got)
	}
	all := ""
	for _, v := range vap.Spec.Variables {
		all += v.Expression + "\n"
	}
	if !strings.Contains(all, `"`+PodNameExtra+`"`) {
		t.Errorf("the variables do not read %s:\n%s", PodNameExtra, all)
	}
	// Both forms can be installed for one Lease.
	stamp, _, _ := Policy(validConfig())
	if stamp.Name == vap.Name {
		t.Errorf("Policy and IdentityPolicy share the name %q", vap.Name)
	}
}

func TestNamespacesNarrowTheMatch(t *testing.T) {
	c := validConfig()
	c.Namespaces = []string{"team-a", "team-b"}
	vap, _, err := Policy(c)
	if err != nil {
		t.Fatal(err)
	}
	sel := vap.Spec.MatchConstraints.NamespaceSelector
	want := &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "kubernetes.io/metadata.name", Operator: metav1.LabelSelectorOpIn, Values: []string{"team-a", "team-b"}}}}
	if !reflect.DeepEqual(sel, want) {
		t.Errorf("namespaceSelector %+v; want %+v", sel, want)
	}
	// Cluster-scoped objects stay fenced: the selector never exempts them.
	for _, r := range vap.Spec.MatchConstraints.ResourceRules {
		if *r.Scope != admissionregistrationv1.AllScopes {
			t.Errorf("scope %v with Namespaces; want * (cluster-scoped objects fenced too)", *r.Scope)
		}
	}
	c.Namespaces[0] = "changed"
	if sel.MatchExpressions[0].Values[0] != "team-a" {
		t.Error("the selector shares the Config's slice")
	}
}

func TestTheElectionLeaseIsNeverFenced(t *testing.T) {
	want := admissionregistrationv1.MatchCondition{
		Name:       "not-the-election-lease",
		Expression: `!(request.resource.group == "coordination.k8s.io" && request.resource.resource == "leases" && request.namespace == "team-a" && request.name == "my-controller")`,
	}
	for _, r := range []Resource{
		{Group: "coordination.k8s.io", Resource: "leases"},
		{Group: "*", Resource: "*"},
		{Group: "coordination.k8s.io", Resource: "*"},
	} {
		c := validConfig()
		c.Resources = []Resource{r}
		for name, build := range map[string]func(Config) (*admissionregistrationv1.ValidatingAdmissionPolicy, *admissionregistrationv1.ValidatingAdmissionPolicyBinding, error){
			"Policy": Policy, "IdentityPolicy": IdentityPolicy,
		} {
			vap, _, err := build(c)
			if err != nil {
				t.Fatal(err)
			}
			// The exemption names the Lease's namespace: exclusion rules
			// (resourceNames) cannot, and would exempt every namespace.
			if ex := vap.Spec.MatchConstraints.ExcludeResourceRules; ex != nil {
				t.Errorf("%s %+v: exclusion rules %+v; want none", name, r, ex)
			}
			mc := vap.Spec.MatchConditions
			if len(mc) != 2 || mc[0].Name != "fenced-writer" || !reflect.DeepEqual(mc[1], want) {
				t.Errorf("%s %+v: matchConditions %+v; want the writers, then %+v", name, r, mc, want)
			}
		}
	}
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name     string
		mod      func(*Config)
		identity bool
		want     string
	}{
		{"no Lease", func(c *Config) { c.Lease = "" }, false, `want "namespace/name"`},
		{"Lease without namespace", func(c *Config) { c.Lease = "my-controller" }, false, `want "namespace/name"`},
		{"Lease with two slashes", func(c *Config) { c.Lease = "a/b/c" }, false, `want "namespace/name"`},
		{"bad namespace", func(c *Config) { c.Lease = "Team/x" }, false, "namespace"},
		{"bad name", func(c *Config) { c.Lease = "team/X_y" }, false, "name"},
		{"no writers", func(c *Config) { c.Writers = nil }, false, "no Writers"},
		{"blank writer", func(c *Config) { c.Writers = []string{" "} }, false, "not a username"},
		{"invalid UTF-8 writer", func(c *Config) { c.Writers = []string{"a\xffb"} }, false, "not a username"},
		{"no resources", func(c *Config) { c.Resources = nil }, false, "no Resources"},
		{"empty resource", func(c *Config) { c.Resources = []Resource{{Group: "apps"}} }, false, "must name a resource"},
		{"subresource in Policy", func(c *Config) { c.Resources = []Resource{{Group: "apps", Resource: "deployments/status"}} }, false, "fence it with IdentityPolicy"},
		{"two subresources", func(c *Config) { c.Resources = []Resource{{Resource: "a/b/c"}} }, true, "at most one subresource"},
		{"bad namespace filter", func(c *Config) { c.Namespaces = []string{"Not_A_Namespace"} }, false, "Namespaces"},
		{"AllowUnstamped with IdentityPolicy", func(c *Config) { c.AllowUnstamped = true }, true, "AllowUnstamped applies to Policy only"},
		{"IdentityPolicy writer of another namespace", func(c *Config) { c.Writers = append(c.Writers, ServiceAccount("team-b", "my-controller")) }, true,
			`"system:serviceaccount:team-b:my-controller" is not a service account of namespace "team-a"`},
		{"IdentityPolicy writer that is not a service account", func(c *Config) { c.Writers = []string{"alice"} }, true, `"alice" is not a service account of namespace "team-a"`},
		{"IdentityPolicy writer with no account name", func(c *Config) { c.Writers = []string{ServiceAccount("team-a", "")} }, true, "is not a service account"},
		{"IdentityPolicy writer outside PodNamespace", func(c *Config) { c.PodNamespace = "ops" }, true, `is not a service account of namespace "ops"`},
		{"bad PodNamespace", func(c *Config) { c.PodNamespace = "Ops_1" }, true, "PodNamespace"},
		{"bad name override", func(c *Config) { c.Name = "Not Valid" }, false, "Name"},
		{"default name too long", func(c *Config) { c.Lease = "ns/" + strings.Repeat("a", 250) }, false, "set Config.Name"},
	} {
		c := validConfig()
		tc.mod(&c)
		f := Policy
		if tc.identity {
			f = IdentityPolicy
		}
		vap, b, err := f(c)
		if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v; want ErrInvalidConfig mentioning %q", tc.name, err, tc.want)
		}
		if vap != nil || b != nil {
			t.Errorf("%s: objects returned with an error", tc.name)
		}
	}
}

// A writer of another namespace is fine for Policy (a stamp names no pod),
// and for IdentityPolicy once PodNamespace names its namespace.
func TestWritersOfAnotherNamespace(t *testing.T) {
	c := validConfig()
	c.Writers = []string{ServiceAccount("ops", "my-controller")}
	if _, _, err := Policy(c); err != nil {
		t.Errorf("Policy with a writer of another namespace: %v", err)
	}
	c.PodNamespace = "ops"
	vap, _, err := IdentityPolicy(c)
	if err != nil {
		t.Fatalf("IdentityPolicy with PodNamespace ops and a writer of ops: %v", err)
	}
	found := false
	for _, v := range vap.Spec.Validations {
		if v.Expression == `request.userInfo.username.startsWith("system:serviceaccount:ops:")` {
			found = true
		}
	}
	if !found {
		t.Errorf("no validation of the writer's namespace ops in %+v", vap.Spec.Validations)
	}
}

func TestNameOverride(t *testing.T) {
	c := validConfig()
	c.Name = "my-fence"
	vap, b, err := IdentityPolicy(c)
	if err != nil {
		t.Fatal(err)
	}
	if vap.Name != "my-fence" || b.Name != "my-fence" || b.Spec.PolicyName != "my-fence" {
		t.Errorf("names %q %q %q; want my-fence", vap.Name, b.Name, b.Spec.PolicyName)
	}
}

func TestCELStringLiteral(t *testing.T) {
	for in, want := range map[string]string{
		"system:serviceaccount:ns:sa": `"system:serviceaccount:ns:sa"`,
		`say "hi"`:                    `"say \"hi\""`,
		`back\slash`:                  `"back\\slash"`,
		"line\nbreak\x7f":             `"line\u000abreak\u007f"`,
		"ünïcödé":                     `"ünïcödé"`,
	} {
		if got := cel(in); got != want {
			t.Errorf("cel(%q) = %s; want %s", in, got, want)
		}
	}
	c := validConfig()
	c.Writers = []string{`we"ird`, "plain"}
	vap, _, err := Policy(c)
	if err != nil {
		t.Fatal(err)
	}
	if got := vap.Spec.MatchConditions[0].Expression; got != `request.userInfo.username in ["we\"ird", "plain"]` {
		t.Errorf("matchCondition %s", got)
	}
}

func ptrTo[T any](v T) *T { return &v }
