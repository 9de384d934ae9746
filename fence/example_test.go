package fence_test

import (
	"context"
	"encoding/json"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/leasehold/leasehold"
	"github.com/leasehold/leasehold/fence"
	"github.com/leasehold/leasehold/leaseholdtest"
)

// Stamping inside OnStartedLeading: every object the work writes carries
// its term, so the API server (with Policy installed) refuses the writes
// of a term that has ended. Here the Lease lives in an in-memory test
// server and the writes go to a fake clientset, so the example runs
// anywhere.
func ExampleStamp() {
	srv := leaseholdtest.NewServer() // in production: clientset.CoordinationV1()
	var clientset kubernetes.Interface = fake.NewClientset()
	ctx, stop := context.WithCancel(context.Background())

	_ = leasehold.Run(ctx, leasehold.Config{
		Lock:            &leasehold.LeaseLock{Namespace: "default", Name: "my-controller", Identity: "pod-a", Client: srv.Client("pod-a")},
		ReleaseOnCancel: true,
		Callbacks: leasehold.Callbacks{
			OnStartedLeading: func(ctx context.Context) {
				defer stop() // a real controller runs until ctx is cancelled
				cm := &corev1.ConfigMap{
					ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "report"},
					Data:       map[string]string{"status": "ok"},
				}
				if err := fence.Stamp(ctx, cm); err != nil {
					fmt.Println(err) // ctx carries no term: not this ctx
					return
				}
				_, err := clientset.CoreV1().ConfigMaps("default").Create(ctx, cm, metav1.CreateOptions{})
				if fence.IsFenced(err) {
					return // this term is over: stop working
				}
				fmt.Println("holder:", cm.Annotations[fence.HolderAnnotation])
				fmt.Println("term:", cm.Annotations[fence.TermAnnotation])
			},
		},
	})
	// Output:
	// holder: pod-a
	// term: 0
}

// A merge patch carries the stamp too: the API server checks the object
// as it would be stored, so a patch without it would be checked against
// whatever stamp the object already has.
func ExampleAnnotations() {
	patch := func(ctx context.Context, c kubernetes.Interface) error {
		stamp, err := fence.Annotations(ctx)
		if err != nil {
			return err
		}
		body := map[string]any{
			"metadata": map[string]any{"annotations": stamp},
			"data":     map[string]string{"status": "ok"},
		}
		raw, err := json.Marshal(body)
		if err != nil {
			return err
		}
		_, err = c.CoreV1().ConfigMaps("default").Patch(ctx, "report", types.MergePatchType, raw, metav1.PatchOptions{})
		return err
	}
	// Outside a term, there is nothing to stamp with.
	fmt.Println(patch(context.Background(), fake.NewClientset()))
	// Output:
	// fence: the context carries no leadership term
}

// The policy and binding that fence the controller's ConfigMap and
// Deployment writes with the Lease team-a/my-controller. Create the policy
// first, then the binding, as a user who may get the Lease.
func ExamplePolicy() {
	vap, binding, err := fence.Policy(fence.Config{
		Lease:   "team-a/my-controller",
		Writers: []string{fence.ServiceAccount("team-a", "my-controller")},
		Resources: []fence.Resource{
			{Group: "", Resource: "configmaps"},
			{Group: "apps", Resource: "deployments"},
		},
		Namespaces: []string{"team-a"},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	// In production:
	//	admission := clientset.AdmissionregistrationV1()
	//	admission.ValidatingAdmissionPolicies().Create(ctx, vap, metav1.CreateOptions{})
	//	admission.ValidatingAdmissionPolicyBindings().Create(ctx, binding, metav1.CreateOptions{})
	fmt.Println(vap.Name)
	fmt.Println(vap.Spec.ParamKind.APIVersion, vap.Spec.ParamKind.Kind)
	fmt.Println(binding.Spec.ParamRef.Namespace+"/"+binding.Spec.ParamRef.Name, *binding.Spec.ParamRef.ParameterNotFoundAction)
	fmt.Println(vap.Spec.MatchConditions[0].Expression)
	// Output:
	// leasehold-fence.team-a.my-controller
	// coordination.k8s.io/v1 Lease
	// team-a/my-controller Deny
	// request.userInfo.username in ["system:serviceaccount:team-a:my-controller"]
}

// The identity form needs no stamping: each replica's identity is its pod
// name (or leasehold.DefaultIdentity, "<hostname>_<random>", where the
// hostname is the pod name), and only the holder's pod may write.
func ExampleIdentityPolicy() {
	vap, _, err := fence.IdentityPolicy(fence.Config{
		Lease:     "team-a/my-controller",
		Writers:   []string{fence.ServiceAccount("team-a", "my-controller")},
		Resources: []fence.Resource{{Group: "apps", Resource: "deployments"}, {Group: "apps", Resource: "deployments/status"}},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(vap.Name)
	for _, r := range vap.Spec.MatchConstraints.ResourceRules {
		fmt.Println(r.Resources, r.Operations)
	}
	// Output:
	// leasehold-fence-identity.team-a.my-controller
	// [deployments] [CREATE UPDATE DELETE]
	// [deployments/status] [CREATE UPDATE DELETE]
}
