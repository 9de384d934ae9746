package fence

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/utils/ptr"
)

// PodNameExtra is the user-info extra key under which the API server
// names the pod a service account token is bound to. IdentityPolicy
// compares it with the Lease's holder.
const PodNameExtra = "authentication.kubernetes.io/pod-name"

// ErrInvalidConfig is wrapped by the errors of Policy and IdentityPolicy
// for a Config they cannot turn into a policy.
var ErrInvalidConfig = errors.New("fence: invalid config")

// Config says which Lease fences which writes.
type Config struct {
	// Lease is the election's Lease, "namespace/name": the policy's
	// parameter. Required.
	Lease string

	// Writers are the usernames whose writes are fenced, usually the
	// controller's service account (see ServiceAccount). Required. Writes
	// by anyone else (users, other controllers, the garbage collector)
	// are not checked at all. All replicas of the controller must write
	// as one of Writers, and no other controller should share them.
	Writers []string

	// Resources are the resources whose writes are fenced. Required. If
	// they include Leases, the election's Lease itself (by namespace and
	// name) is never fenced: its writes are how a term begins.
	Resources []Resource

	// Namespaces, if set, limits the fence of namespaced objects to
	// those in these namespaces. Cluster-scoped objects of Resources are
	// fenced all the same (a Namespace object is fenced if it is one of
	// Namespaces): a controller's writes to them are writes like any
	// other, and leaving them out silently would let a deposed leader
	// write them. List Resources precisely to leave them out. Empty:
	// every namespace.
	Namespaces []string

	// PodNamespace is the namespace of the controller's pods, for
	// IdentityPolicy: the Lease's holder names a pod of this namespace,
	// so only service accounts of this namespace can be Writers, and a
	// pod of the holder's name in any other namespace is refused.
	// Default: the Lease's namespace. Policy ignores it.
	PodNamespace string

	// AllowUnstamped makes Policy admit a write by Writers that carries no
	// stamp at all (no annotation of the stamp, on the object as it would
	// be stored). By default such writes are refused, so that a write
	// that forgot to Stamp fails loudly instead of escaping the fence.
	// Set it while migrating a controller to stamping. IdentityPolicy
	// rejects a Config that sets it.
	AllowUnstamped bool

	// Name names the ValidatingAdmissionPolicy and its binding. Default:
	// "leasehold-fence.<namespace>.<name>" for Policy and
	// "leasehold-fence-identity.<namespace>.<name>" for IdentityPolicy,
	// so that both can be installed for one Lease.
	Name string
}

// Resource names the resources of one API group, as in an admission rule.
type Resource struct {
	// Group is the API group; "" is the core group, "*" every group.
	Group string
	// Versions are the API versions. Default: every version ("*").
	// Writes through any version are matched anyway (the policy's
	// matchPolicy is Equivalent); list versions only to narrow.
	Versions []string
	// Resource is the plural resource name ("configmaps"), or "*". With
	// IdentityPolicy it may name a subresource: "deployments/status",
	// "*/status", "*/*".
	Resource string
}

// ServiceAccount returns the username a service account authenticates
// as: "system:serviceaccount:<namespace>:<name>".
func ServiceAccount(namespace, name string) string {
	return "system:serviceaccount:" + namespace + ":" + name
}

// Policy returns a ValidatingAdmissionPolicy and its binding that fence
// the writes of c.Writers to c.Resources by stamp: a create or update is
// admitted only if the object, as it would be stored, carries the stamp
// (see Stamp) of the Lease's current term:
//
//	HolderAnnotation   == the Lease's spec.holderIdentity (which must be set)
//	TermAnnotation     == the Lease's spec.leaseTransitions (absent: 0)
//	LeaseUIDAnnotation == the Lease's metadata.uid
//
// A write with no stamp is refused unless c.AllowUnstamped; an update
// that removes the stamp stored on the object is refused even then. An
// update that sets no stamp (a patch or an apply without it, a
// read-modify-write that sends back the stamp it read) keeps the stored
// one and is judged by it: refused if that is not the current term's,
// with a message that says so, and admitted if the current leader wrote
// it, since nothing in such a write tells who sent it. Fence those, and
// deletes (a delete carries no object to stamp), with IdentityPolicy.
// Subresources are refused in c.Resources: the API server resets
// metadata on some subresource writes (custom resources' status among
// them), so the stamp it would check is not the writer's. If the Lease
// does not exist, every fenced write is refused
// (parameterNotFoundAction Deny).
//
// The binding's paramRef names the Lease; the API server reads it
// through a cache of every Lease in the cluster. Whoever creates the
// binding needs "get" on that Lease, and the policy must exist before
// the binding. See the package documentation for what is guaranteed.
func Policy(c Config) (*admissionregistrationv1.ValidatingAdmissionPolicy, *admissionregistrationv1.ValidatingAdmissionPolicyBinding, error) {
	ns, name, err := c.check("leasehold-fence", false)
	if err != nil {
		return nil, nil, err
	}
	lease := ns + "/" + name
	vars := []admissionregistrationv1.Variable{
		{Name: "stampHolder", Expression: annotation("object", HolderAnnotation)},
		{Name: "stampTerm", Expression: annotation("object", TermAnnotation)},
		{Name: "stampLeaseUID", Expression: annotation("object", LeaseUIDAnnotation)},
		{Name: "stamped", Expression: `variables.stampHolder != "" || variables.stampTerm != "" || variables.stampLeaseUID != ""`},
		// The stamp stored on the object (an update's oldObject), to tell
		// a write that kept it from one that set it, and to refuse a
		// write that removes it.
		{Name: "oldStampHolder", Expression: annotation("oldObject", HolderAnnotation)},
		{Name: "oldStampTerm", Expression: annotation("oldObject", TermAnnotation)},
		{Name: "oldStampLeaseUID", Expression: annotation("oldObject", LeaseUIDAnnotation)},
		{Name: "oldStamped", Expression: `variables.oldStampHolder != "" || variables.oldStampTerm != "" || variables.oldStampLeaseUID != ""`},
		{Name: "keptStamp", Expression: `variables.oldStamped && variables.stampHolder == variables.oldStampHolder && ` +
			`variables.stampTerm == variables.oldStampTerm && variables.stampLeaseUID == variables.oldStampLeaseUID`},
		leaseHolderVar,
		{Name: "term", Expression: `string(params.?spec.?leaseTransitions.orValue(0))`},
		{Name: "current", Expression: `variables.holder != "" && variables.stampHolder == variables.holder && ` +
			`variables.stampTerm == variables.term && variables.stampLeaseUID == params.metadata.uid`},
	}
	stampKeys := " (annotations " + HolderAnnotation + ", " + TermAnnotation + ", " + LeaseUIDAnnotation + ")"
	unstamped := admissionregistrationv1.Validation{
		Expression: "variables.stamped",
		Message: refusalPrefix + "the write carries no stamp of a leadership term of Lease " + lease + stampKeys +
			"; this controller must stamp every write it makes",
		Reason: ptr.To(metav1.StatusReasonForbidden),
	}
	if c.AllowUnstamped {
		// Unstamped writes pass, but not over a stamp: that would erase
		// the term that wrote the object with a write of no term at all.
		unstamped = admissionregistrationv1.Validation{
			Expression: "variables.stamped || !variables.oldStamped",
			Message: refusalPrefix + "the write carries no stamp of a leadership term of Lease " + lease + stampKeys +
				" and would remove the one stored on the object; with AllowUnstamped, only objects that carry no stamp may be written without one",
			MessageExpression: cel(refusalPrefix+"the write carries no stamp of a leadership term of Lease "+lease+stampKeys+
				" and would remove the one stored on the object, for term ") + ` + variables.oldStampTerm + " of " + variables.oldStampHolder + ` +
				cel("; with AllowUnstamped, only objects that carry no stamp may be written without one"),
			Reason: ptr.To(metav1.StatusReasonForbidden),
		}
	}
	validations := []admissionregistrationv1.Validation{unstamped, {
		Expression: "!variables.stamped || variables.current",
		Message:    refusalPrefix + "the write's stamp is not the current term of Lease " + lease,
		MessageExpression: cel(refusalPrefix+"the write is stamped for term ") + ` + variables.stampTerm + " of " + variables.stampHolder + ` +
			cel(", but Lease "+lease+" ") + ` + ` +
			`(variables.holder == "" ? "has no holder" : "is in term " + variables.term + " of " + variables.holder) + ` +
			`(variables.stampLeaseUID == params.metadata.uid ? "" : " (the stamp names Lease UID " + variables.stampLeaseUID + ", the Lease's UID is " + params.metadata.uid + ")") + ` +
			`": only the Lease's current term may write" + ` +
			`(variables.keptStamp ? "; the write keeps the stamp stored on the object (a write that sets no stamp is judged by the stored one): stamp every write" : "")`,
		Reason: ptr.To(metav1.StatusReasonForbidden),
	}}
	vap, binding := c.objects(ns, name, []admissionregistrationv1.OperationType{admissionregistrationv1.Create, admissionregistrationv1.Update}, vars, validations)
	return vap, binding, nil
}

// IdentityPolicy returns a ValidatingAdmissionPolicy and its binding that
// fence the writes of c.Writers to c.Resources by the writer's pod, with
// no stamping: a create, update or delete (of the resources or
// subresources listed, status included) is admitted only if the request
// names exactly one pod (the user-info extra PodNameExtra, which the API
// server sets for a service account token bound to a pod) and the
// Lease's spec.holderIdentity is that pod's name, or that name followed by
// "_" and anything.
//
// The pod is also checked to be in the namespace of the holders' pods
// (c.PodNamespace, by default the Lease's): its service account, the
// request's username "system:serviceaccount:<namespace>:<name>", must be
// of that namespace, and so must every one of c.Writers (a Config with a
// writer of another namespace, or that is not a service account, is
// refused), since a holder identity names a pod but not its namespace.
//
// So each replica's leasehold identity must be its pod's name (set
// Identity from the downward API, metadata.name), or
// leasehold.DefaultIdentity when the pod's hostname is its name (no
// spec.hostname, and a name of at most 63 characters), since that is
// "<hostname>_<random>". Pod names cannot contain "_", so no pod can pass
// for another. Run one elector per pod: two containers of one pod are one
// writer to this policy. Writes with a token not bound to a pod (no
// PodNameExtra) are refused, as are all writes while the Lease has no
// holder or does not exist.
func IdentityPolicy(c Config) (*admissionregistrationv1.ValidatingAdmissionPolicy, *admissionregistrationv1.ValidatingAdmissionPolicyBinding, error) {
	ns, name, err := c.check("leasehold-fence-identity", true)
	if err != nil {
		return nil, nil, err
	}
	lease := ns + "/" + name
	podNS := c.podNamespace(ns)
	saPrefix := ServiceAccount(podNS, "")
	vars := []admissionregistrationv1.Variable{
		leaseHolderVar,
		{Name: "podNames", Expression: `request.userInfo.?extra[?` + cel(PodNameExtra) + `].orValue([])`},
		{Name: "pod", Expression: `variables.podNames.size() == 1 ? variables.podNames[0] : ""`},
	}
	validations := []admissionregistrationv1.Validation{
		{
			Expression: `variables.pod != ""`,
			Message: refusalPrefix + "the request names no pod (user extra " + PodNameExtra +
				"): this controller must write with a service account token bound to its pod",
			Reason: ptr.To(metav1.StatusReasonForbidden),
		},
		{
			// The holder names a pod, not its namespace: the pod must be
			// in the holders' namespace, or a pod of the same name in
			// another would pass for it.
			Expression: `request.userInfo.username.startsWith(` + cel(saPrefix) + `)`,
			Message: refusalPrefix + "the writer is not a service account of namespace " + podNS +
				", where the pods that hold Lease " + lease + " run",
			MessageExpression: cel(refusalPrefix+"the writer ") + ` + request.userInfo.username + ` +
				cel(" is not a service account of namespace "+podNS+", where the pods that hold Lease "+lease+" run"),
			Reason: ptr.To(metav1.StatusReasonForbidden),
		},
		{
			Expression: `variables.holder != "" && (variables.holder == variables.pod || variables.holder.startsWith(variables.pod + "_"))`,
			Message:    refusalPrefix + "the writer's pod does not hold Lease " + lease,
			MessageExpression: cel(refusalPrefix+"pod ") + ` + variables.pod + ` + cel(" does not hold Lease "+lease+": ") + ` + ` +
				`(variables.holder == "" ? "it has no holder" : "its holder is " + variables.holder)`,
			Reason: ptr.To(metav1.StatusReasonForbidden),
		},
	}
	ops := []admissionregistrationv1.OperationType{admissionregistrationv1.Create, admissionregistrationv1.Update, admissionregistrationv1.Delete}
	vap, binding := c.objects(ns, name, ops, vars, validations)
	return vap, binding, nil
}

var leaseHolderVar = admissionregistrationv1.Variable{Name: "holder", Expression: `params.?spec.?holderIdentity.orValue("")`}

// annotation is the CEL for the value of an annotation of obj (object or
// oldObject), "" if it has none or obj is null (oldObject on a create).
func annotation(obj, key string) string {
	return obj + ` == null ? "" : ` + obj + `.metadata.?annotations[?` + cel(key) + `].orValue("")`
}

// check validates c and returns the Lease's namespace and name, with
// c.Name defaulted from prefix.
func (c *Config) check(prefix string, identity bool) (ns, name string, err error) {
	fail := func(format string, args ...any) (string, string, error) {
		return "", "", fmt.Errorf("%w: %s", ErrInvalidConfig, fmt.Sprintf(format, args...))
	}
	ns, name, ok := strings.Cut(c.Lease, "/")
	if !ok || strings.Contains(name, "/") {
		return fail("Lease %q: want \"namespace/name\"", c.Lease)
	}
	if errs := validation.IsDNS1123Label(ns); len(errs) > 0 {
		return fail("Lease %q: namespace: %s", c.Lease, strings.Join(errs, "; "))
	}
	if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
		return fail("Lease %q: name: %s", c.Lease, strings.Join(errs, "; "))
	}
	if len(c.Writers) == 0 {
		return fail("no Writers: name the username the controller writes as, such as fence.ServiceAccount(namespace, name)")
	}
	for _, w := range c.Writers {
		if strings.TrimSpace(w) == "" || !utf8.ValidString(w) {
			return fail("Writers: %q is not a username", w)
		}
	}
	if len(c.Resources) == 0 {
		return fail("no Resources to fence")
	}
	for _, r := range c.Resources {
		switch {
		case r.Resource == "" || strings.TrimSpace(r.Resource) != r.Resource:
			return fail("Resources: %+v: Resource must name a resource, such as \"configmaps\"", r)
		case strings.Count(r.Resource, "/") > 1:
			return fail("Resources: %q: at most one subresource", r.Resource)
		case strings.Contains(r.Resource, "/") && !identity:
			return fail("Resources: %q is a subresource: the API server may reset metadata on its writes, so a stamp cannot be checked there; fence it with IdentityPolicy", r.Resource)
		}
	}
	for _, n := range c.Namespaces {
		if errs := validation.IsDNS1123Label(n); len(errs) > 0 {
			return fail("Namespaces: %q: %s", n, strings.Join(errs, "; "))
		}
	}
	if identity && c.AllowUnstamped {
		return fail("AllowUnstamped applies to Policy only: IdentityPolicy checks no stamp")
	}
	if identity {
		podNS := c.podNamespace(ns)
		if errs := validation.IsDNS1123Label(podNS); len(errs) > 0 {
			return fail("PodNamespace %q: %s", c.PodNamespace, strings.Join(errs, "; "))
		}
		prefix := ServiceAccount(podNS, "")
		for _, w := range c.Writers {
			if sa, ok := strings.CutPrefix(w, prefix); !ok || sa == "" || strings.Contains(sa, ":") {
				return fail("Writers: %q is not a service account of namespace %q, where IdentityPolicy takes the pods that hold Lease %q to run "+
					"(a holder names a pod, not its namespace), so its writes could never be admitted; "+
					"set PodNamespace to the namespace of the controller's pods, or fence this writer with Policy", w, podNS, c.Lease)
			}
		}
	}
	if c.Name == "" {
		c.Name = prefix + "." + ns + "." + name
	}
	if errs := validation.IsDNS1123Subdomain(c.Name); len(errs) > 0 {
		return fail("Name %q: %s (set Config.Name)", c.Name, strings.Join(errs, "; "))
	}
	return ns, name, nil
}

// podNamespace is the namespace of the pods that may hold the Lease in
// leaseNS: c.PodNamespace, or leaseNS.
func (c *Config) podNamespace(leaseNS string) string {
	if c.PodNamespace != "" {
		return c.PodNamespace
	}
	return leaseNS
}

// objects builds the policy and its binding.
func (c *Config) objects(ns, name string, ops []admissionregistrationv1.OperationType,
	vars []admissionregistrationv1.Variable, validations []admissionregistrationv1.Validation,
) (*admissionregistrationv1.ValidatingAdmissionPolicy, *admissionregistrationv1.ValidatingAdmissionPolicyBinding) {
	match := &admissionregistrationv1.MatchResources{}
	// Every scope, with Namespaces too: the namespace selector narrows
	// namespaced objects (and Namespace objects, by their own labels)
	// and never exempts other cluster-scoped objects, which stay fenced.
	scope := admissionregistrationv1.AllScopes
	if len(c.Namespaces) > 0 {
		match.NamespaceSelector = &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{
			Key: "kubernetes.io/metadata.name", Operator: metav1.LabelSelectorOpIn, Values: append([]string(nil), c.Namespaces...),
		}}}
	}
	coversLease := false
	for _, r := range c.Resources {
		versions := r.Versions
		if len(versions) == 0 {
			versions = []string{"*"}
		}
		match.ResourceRules = append(match.ResourceRules, admissionregistrationv1.NamedRuleWithOperations{
			RuleWithOperations: admissionregistrationv1.RuleWithOperations{
				Operations: ops,
				Rule: admissionregistrationv1.Rule{
					APIGroups:   []string{r.Group},
					APIVersions: append([]string(nil), versions...),
					Resources:   []string{r.Resource},
					Scope:       ptr.To(scope),
				},
			},
		})
		res, _, _ := strings.Cut(r.Resource, "/")
		if (r.Group == "coordination.k8s.io" || r.Group == "*") && (res == "leases" || res == "*") {
			coversLease = true
		}
	}
	writers := make([]string, len(c.Writers))
	for i, w := range c.Writers {
		writers[i] = cel(w)
	}
	conditions := []admissionregistrationv1.MatchCondition{{
		Name:       "fenced-writer",
		Expression: "request.userInfo.username in [" + strings.Join(writers, ", ") + "]",
	}}
	if coversLease {
		// Never fence the election's own Lease: its writes are how a term
		// begins, and no stamp can be current before it. Only that Lease,
		// by namespace and name: an exclusion rule's resourceNames carry no
		// namespace, and would exempt the Leases of that name everywhere.
		conditions = append(conditions, admissionregistrationv1.MatchCondition{
			Name: "not-the-election-lease",
			Expression: `!(request.resource.group == "coordination.k8s.io" && request.resource.resource == "leases" && ` +
				`request.namespace == ` + cel(ns) + ` && request.name == ` + cel(name) + `)`,
		})
	}
	vap := &admissionregistrationv1.ValidatingAdmissionPolicy{
		TypeMeta:   metav1.TypeMeta{APIVersion: admissionregistrationv1.SchemeGroupVersion.String(), Kind: "ValidatingAdmissionPolicy"},
		ObjectMeta: metav1.ObjectMeta{Name: c.Name},
		Spec: admissionregistrationv1.ValidatingAdmissionPolicySpec{
			ParamKind:        &admissionregistrationv1.ParamKind{APIVersion: "coordination.k8s.io/v1", Kind: "Lease"},
			MatchConstraints: match,
			MatchConditions:  conditions,
			FailurePolicy:    ptr.To(admissionregistrationv1.Fail),
			Variables:        vars,
			Validations:      validations,
		},
	}
	binding := &admissionregistrationv1.ValidatingAdmissionPolicyBinding{
		TypeMeta:   metav1.TypeMeta{APIVersion: admissionregistrationv1.SchemeGroupVersion.String(), Kind: "ValidatingAdmissionPolicyBinding"},
		ObjectMeta: metav1.ObjectMeta{Name: c.Name},
		Spec: admissionregistrationv1.ValidatingAdmissionPolicyBindingSpec{
			PolicyName: c.Name,
			ParamRef: &admissionregistrationv1.ParamRef{
				Name:                    name,
				Namespace:               ns,
				ParameterNotFoundAction: ptr.To(admissionregistrationv1.DenyAction),
			},
			ValidationActions: []admissionregistrationv1.ValidationAction{admissionregistrationv1.Deny},
		},
	}
	return vap, binding
}

// cel quotes s as a CEL string literal.
func cel(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}
