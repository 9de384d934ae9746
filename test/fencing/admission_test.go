package fencing

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/strategicpatch"
	"k8s.io/apiserver/pkg/admission"
	plugincel "k8s.io/apiserver/pkg/admission/plugin/cel"
	"k8s.io/apiserver/pkg/admission/plugin/policy/generic"
	"k8s.io/apiserver/pkg/admission/plugin/policy/matching"
	"k8s.io/apiserver/pkg/admission/plugin/policy/validating"
	"k8s.io/apiserver/pkg/admission/plugin/webhook/matchconditions"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/cel/environment"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	corev1listers "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"

	"github.com/leasehold/leasehold/fence"
)

// This file runs the fence package's policies through the API server's own
// ValidatingAdmissionPolicy admission code (k8s.io/apiserver's validating
// dispatcher, matcher and CEL environment), in process: no control plane,
// a few milliseconds a decision. What it leaves out is what the control
// plane adds around admission: the informer's lag, storage, and the
// computing of a patch's result (the tests here pass the object as the
// server would store it; the real-server tests send real patches).

// admissionServer evaluates one policy and its binding as kube-apiserver's
// ValidatingAdmissionPolicy plugin does, against a Lease the test sets.
type admissionServer struct {
	t          *testing.T
	vap        *admissionregistrationv1.ValidatingAdmissionPolicy
	binding    *admissionregistrationv1.ValidatingAdmissionPolicyBinding
	hook       validating.PolicyHook
	dispatcher generic.Dispatcher[validating.PolicyHook]
	leases     cache.Indexer
	namespaces cache.Indexer
}

var (
	leasesGVR   = coordinationv1.SchemeGroupVersion.WithResource("leases")
	objectIfces = admission.NewObjectInterfacesFromScheme(clientgoscheme.Scheme)
)

// newAdmissionServer compiles vap as the API server does and fails the
// test if any of its expressions would be refused when the policy is
// created. The binding must name the Lease as its parameter.
func newAdmissionServer(t *testing.T, vap *admissionregistrationv1.ValidatingAdmissionPolicy, b *admissionregistrationv1.ValidatingAdmissionPolicyBinding) *admissionServer {
	t.Helper()
	vap, b = vap.DeepCopy(), b.DeepCopy()
	defaultPolicy(vap)
	if err := compileForCreate(vap); err != nil {
		t.Fatalf("the API server would refuse to create policy %s: %v", vap.Name, err)
	}
	leases := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	namespaces := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	m := matching.NewMatcher(corev1listers.NewNamespaceLister(namespaces), fake.NewClientset())
	s := &admissionServer{
		t: t, vap: vap, binding: b,
		dispatcher: validating.NewDispatcher(nil, generic.NewPolicyMatcher(m)),
		leases:     leases,
		namespaces: namespaces,
	}
	s.hook = validating.PolicyHook{
		Policy:        vap,
		Bindings:      []*admissionregistrationv1.ValidatingAdmissionPolicyBinding{b},
		ParamInformer: paramInformer{indexer: leases},
		ParamScope:    meta.RESTScopeNamespace,
		Evaluator:     compilePolicy(vap),
	}
	return s
}

// paramInformer serves the test's Leases as the policy's param informer,
// always synced: the dispatcher reads only its lister and HasSynced.
type paramInformer struct {
	cache.SharedIndexInformer // nil: no other method is called
	indexer                   cache.Indexer
}

func (p paramInformer) HasSynced() bool                     { return true }
func (p paramInformer) GetIndexer() cache.Indexer           { return p.indexer }
func (p paramInformer) Informer() cache.SharedIndexInformer { return p }
func (p paramInformer) Lister() cache.GenericLister {
	return cache.NewGenericLister(p.indexer, leasesGVR.GroupResource())
}

var _ informers.GenericInformer = paramInformer{}

// defaultPolicy applies the defaults the API server gives a policy on
// create (k8s.io/kubernetes/pkg/apis/admissionregistration/v1/defaults.go).
func defaultPolicy(vap *admissionregistrationv1.ValidatingAdmissionPolicy) {
	mc := vap.Spec.MatchConstraints
	if mc.MatchPolicy == nil {
		mc.MatchPolicy = ptr.To(admissionregistrationv1.Equivalent)
	}
	if mc.NamespaceSelector == nil {
		mc.NamespaceSelector = &metav1.LabelSelector{}
	}
	if mc.ObjectSelector == nil {
		mc.ObjectSelector = &metav1.LabelSelector{}
	}
	for _, rules := range [][]admissionregistrationv1.NamedRuleWithOperations{mc.ResourceRules, mc.ExcludeResourceRules} {
		for i := range rules {
			if rules[i].Scope == nil {
				rules[i].Scope = ptr.To(admissionregistrationv1.AllScopes)
			}
		}
	}
	if vap.Spec.FailurePolicy == nil {
		vap.Spec.FailurePolicy = ptr.To(admissionregistrationv1.Fail)
	}
}

// compilePolicy is the validating plugin's own compilePolicy
// (k8s.io/apiserver/pkg/admission/plugin/policy/validating/plugin.go,
// unexported there), with the environment kube-apiserver runs stored
// policies in.
func compilePolicy(vap *admissionregistrationv1.ValidatingAdmissionPolicy) validating.Validator {
	withParams := vap.Spec.ParamKind != nil
	vars := plugincel.OptionalVariableDeclarations{HasParams: withParams, HasAuthorizer: true}
	messageVars := plugincel.OptionalVariableDeclarations{HasParams: withParams, HasAuthorizer: false}
	compiler, err := plugincel.NewCompositedCompiler(environment.MustBaseEnvSet(environment.DefaultCompatibilityVersion()))
	if err != nil {
		return validating.NewValidator(nil, nil, nil, nil, vap.Spec.FailurePolicy, err)
	}
	compiler.CompileAndStoreVariables(variableAccessors(vap), vars, environment.StoredExpressions)
	var matcher matchconditions.Matcher
	if len(vap.Spec.MatchConditions) > 0 {
		conds := make([]plugincel.ExpressionAccessor, len(vap.Spec.MatchConditions))
		for i := range vap.Spec.MatchConditions {
			conds[i] = (*matchconditions.MatchCondition)(&vap.Spec.MatchConditions[i])
		}
		matcher = matchconditions.NewMatcher(compiler.CompileCondition(conds, vars, environment.StoredExpressions), vap.Spec.FailurePolicy, "policy", "validate", vap.Name)
	}
	validations, messages := validationAccessors(vap)
	return validating.NewValidator(
		compiler.CompileCondition(validations, vars, environment.StoredExpressions),
		matcher,
		compiler.CompileCondition(nil, vars, environment.StoredExpressions),
		compiler.CompileCondition(messages, messageVars, environment.StoredExpressions),
		vap.Spec.FailurePolicy,
		nil,
	)
}

func variableAccessors(vap *admissionregistrationv1.ValidatingAdmissionPolicy) []plugincel.NamedExpressionAccessor {
	out := make([]plugincel.NamedExpressionAccessor, len(vap.Spec.Variables))
	for i, v := range vap.Spec.Variables {
		out[i] = &validating.Variable{Name: v.Name, Expression: v.Expression}
	}
	return out
}

func validationAccessors(vap *admissionregistrationv1.ValidatingAdmissionPolicy) (validations, messages []plugincel.ExpressionAccessor) {
	validations = make([]plugincel.ExpressionAccessor, len(vap.Spec.Validations))
	messages = make([]plugincel.ExpressionAccessor, len(vap.Spec.Validations))
	for i, v := range vap.Spec.Validations {
		validations[i] = &validating.ValidationCondition{Expression: v.Expression, Message: v.Message, Reason: v.Reason}
		if v.MessageExpression != "" {
			messages[i] = &validating.MessageExpressionCondition{MessageExpression: v.MessageExpression}
		}
	}
	return validations, messages
}

// compileForCreate compiles every expression of vap in the environment
// the API server checks a new policy's expressions in (NewExpressions),
// and returns their errors.
func compileForCreate(vap *admissionregistrationv1.ValidatingAdmissionPolicy) error {
	compiler, err := plugincel.NewCompositedCompiler(environment.MustBaseEnvSet(environment.DefaultCompatibilityVersion()))
	if err != nil {
		return err
	}
	vars := plugincel.OptionalVariableDeclarations{HasParams: vap.Spec.ParamKind != nil, HasAuthorizer: true}
	var errs []error
	for _, v := range variableAccessors(vap) {
		if r := compiler.CompileAndStoreVariable(v, vars, environment.NewExpressions); r.Error != nil {
			errs = append(errs, fmt.Errorf("variable %s: %w", v.GetName(), r.Error))
		}
	}
	validations, messages := validationAccessors(vap)
	all := validations
	for _, m := range messages {
		if m != nil {
			all = append(all, m)
		}
	}
	for i := range vap.Spec.MatchConditions {
		all = append(all, (*matchconditions.MatchCondition)(&vap.Spec.MatchConditions[i]))
	}
	for _, a := range all {
		if r := compiler.CompileCELExpression(a, vars, environment.NewExpressions); r.Error != nil {
			errs = append(errs, fmt.Errorf("%q: %w", a.GetExpression(), r.Error))
		}
	}
	return errors.Join(errs...)
}

// setLease makes l the API server's copy of its Lease (nil: none).
func (s *admissionServer) setLease(l *coordinationv1.Lease) {
	s.t.Helper()
	ref := s.binding.Spec.ParamRef
	if l == nil {
		_ = s.leases.Delete(&unstructured.Unstructured{Object: map[string]any{"metadata": map[string]any{"namespace": ref.Namespace, "name": ref.Name}}})
		return
	}
	l = l.DeepCopy()
	l.APIVersion, l.Kind = "coordination.k8s.io/v1", "Lease"
	u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(l)
	if err != nil {
		s.t.Fatal(err)
	}
	if err := s.leases.Update(&unstructured.Unstructured{Object: u}); err != nil {
		s.t.Fatal(err)
	}
}

// requester is who sends a request: a username and, for a token bound to a
// pod, that pod's name.
type requester struct {
	user string
	pod  string
}

// write is one request as admission sees it.
type write struct {
	op          admission.Operation
	gvr         schema.GroupVersionResource
	gvk         schema.GroupVersionKind
	subresource string
	namespace   string
	name        string
	// object is the object as it would be stored (nil for a delete),
	// oldObject the stored one (nil for a create).
	object, oldObject runtime.Object
	// options are the request's options (CreateOptions, UpdateOptions,
	// PatchOptions for patches and server-side apply, DeleteOptions).
	options runtime.Object
}

// admit runs w, sent by who, through the policy, and returns admission's
// answer: nil if admitted.
func (s *admissionServer) admit(who requester, w write) error {
	s.t.Helper()
	if w.namespace != "" {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: w.namespace, Labels: map[string]string{corev1.LabelMetadataName: w.namespace}}}
		if err := s.namespaces.Update(ns); err != nil {
			s.t.Fatal(err)
		}
	}
	u := &user.DefaultInfo{Name: who.user}
	if who.pod != "" {
		u.Extra = map[string][]string{fence.PodNameExtra: {who.pod}}
	}
	attrs := admission.NewAttributesRecord(w.object, w.oldObject, w.gvk, w.namespace, w.name, w.gvr, w.subresource, w.op, w.options, false, u)
	return s.dispatcher.Dispatch(context.Background(), attrs, objectIfces, []validating.PolicyHook{s.hook})
}

// resourceOf names the resource and kind of the objects the tests write.
func resourceOf(t *testing.T, obj runtime.Object) (schema.GroupVersionResource, schema.GroupVersionKind) {
	t.Helper()
	switch obj.(type) {
	case *corev1.ConfigMap:
		return corev1.SchemeGroupVersion.WithResource("configmaps"), corev1.SchemeGroupVersion.WithKind("ConfigMap")
	case *coordinationv1.Lease:
		return leasesGVR, coordinationv1.SchemeGroupVersion.WithKind("Lease")
	case *appsv1.Deployment:
		return appsv1.SchemeGroupVersion.WithResource("deployments"), appsv1.SchemeGroupVersion.WithKind("Deployment")
	case *rbacv1.ClusterRole:
		return rbacv1.SchemeGroupVersion.WithResource("clusterroles"), rbacv1.SchemeGroupVersion.WithKind("ClusterRole")
	case *corev1.Namespace:
		return corev1.SchemeGroupVersion.WithResource("namespaces"), corev1.SchemeGroupVersion.WithKind("Namespace")
	}
	t.Fatalf("no resource known for %T", obj)
	return schema.GroupVersionResource{}, schema.GroupVersionKind{}
}

// request is the write of op on obj (nil for a delete) over stored (nil
// for a create), with the options the API server passes admission.
func request(t *testing.T, op admission.Operation, obj, stored runtime.Object, options string) write {
	t.Helper()
	named := obj
	if named == nil {
		named = stored
	}
	m, err := meta.Accessor(named)
	if err != nil {
		t.Fatal(err)
	}
	gvr, gvk := resourceOf(t, named)
	ns := m.GetNamespace()
	if gvk.Kind == "Namespace" {
		// Admission sees a Namespace in its own namespace.
		ns = m.GetName()
	}
	w := write{op: op, gvr: gvr, gvk: gvk, namespace: ns, name: m.GetName(), object: obj, oldObject: stored}
	switch options {
	case "CreateOptions":
		w.options = &metav1.CreateOptions{}
	case "UpdateOptions":
		w.options = &metav1.UpdateOptions{}
	case "PatchOptions":
		w.options = &metav1.PatchOptions{}
	case "DeleteOptions":
		w.options = &metav1.DeleteOptions{}
	}
	w.options.GetObjectKind().SetGroupVersionKind(metav1.SchemeGroupVersion.WithKind(options))
	return w
}

// createOf is the create of obj.
func createOf(t *testing.T, obj runtime.Object) write {
	return request(t, admission.Create, obj, nil, "CreateOptions")
}

// updateOf is a PUT of obj over stored.
func updateOf(t *testing.T, stored, obj runtime.Object) write {
	return request(t, admission.Update, obj, stored, "UpdateOptions")
}

// statusOf is a PUT of obj over stored through the status subresource.
func statusOf(t *testing.T, stored, obj runtime.Object) write {
	w := request(t, admission.Update, obj, stored, "UpdateOptions")
	w.subresource = "status"
	return w
}

// deleteOf is the delete of stored.
func deleteOf(t *testing.T, stored runtime.Object) write {
	return request(t, admission.Delete, nil, stored, "DeleteOptions")
}

// patchOf is a merge patch of stored, or a server-side apply of the same
// fields by a field manager that does not own the fields it leaves out:
// admission sees an UPDATE of the object as patched, with PatchOptions.
func patchOf(t *testing.T, stored runtime.Object, patch map[string]any) write {
	t.Helper()
	orig, err := json.Marshal(stored)
	if err != nil {
		t.Fatal(err)
	}
	p, err := json.Marshal(patch)
	if err != nil {
		t.Fatal(err)
	}
	patched := reflect.New(reflect.TypeOf(stored).Elem()).Interface().(runtime.Object)
	merged, err := strategicpatch.StrategicMergePatch(orig, p, patched)
	if err != nil {
		t.Fatalf("patch %s: %v", p, err)
	}
	if err := json.Unmarshal(merged, patched); err != nil {
		t.Fatal(err)
	}
	return request(t, admission.Update, patched, stored, "PatchOptions")
}
