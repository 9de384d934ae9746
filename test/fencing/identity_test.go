package fencing

import (
	"context"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"

	"github.com/leasehold/leasehold/fence"
	"github.com/leasehold/leasehold/test/testkit"
)

// installIdentityPolicy installs fence.IdentityPolicy for ns/leaseName,
// fencing the controller's writes to ConfigMaps and Deployments (status
// included) in ns.
func installIdentityPolicy(t *testing.T, ns string) {
	t.Helper()
	vap, b, err := fence.IdentityPolicy(fence.Config{
		Lease:   ns + "/" + leaseName,
		Writers: []string{writer(ns)},
		Resources: []fence.Resource{
			{Resource: "configmaps"},
			{Group: "apps", Resource: "deployments"},
			{Group: "apps", Resource: "deployments/status"},
		},
		Namespaces: []string{ns},
	})
	if err != nil {
		t.Fatal(err)
	}
	podless := clientAs(writer(ns), "")
	install(t, vap, b, func() error {
		cm := configMap(t, ns, "", nil)
		cm.GenerateName = "probe-"
		_, err := podless.CoreV1().ConfigMaps(ns).Create(context.Background(), cm, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		return err
	})
}

func deployment(ns, name string) *appsv1.Deployment {
	labels := map[string]string{"app": name}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](1),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "example.invalid/c"}}},
			},
		},
	}
}

// writeStatus sets the Deployment's status.observedGeneration through the
// status subresource, as c.
func writeStatus(ctx context.Context, c kubernetes.Interface, ns, name string, gen int64) error {
	d, err := admin.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	d.Status.ObservedGeneration = gen
	_, err = c.AppsV1().Deployments(ns).UpdateStatus(ctx, d, metav1.UpdateOptions{})
	return err
}

// The identity form: the controller's writes (creates, updates, status,
// deletes) are admitted only from the pod that holds the Lease, named by
// the request's pod-name extra (here through impersonation). After a
// takeover by a replica whose identity is DefaultIdentity's
// "<pod>_<random>", the old pod's delete and status writes are refused.
func TestIdentityPolicy(t *testing.T) {
	ns := newNamespace(t)
	ctx := context.Background()
	a := startElector(t, electorOpts{ns: ns, id: "pod-a", release: true})
	a.leads(t, 20*time.Second)
	installIdentityPolicy(t, ns)
	podA, podB := clientAs(writer(ns), "pod-a"), clientAs(writer(ns), "pod-b")
	lease := "Lease " + ns + "/" + leaseName

	for _, name := range []string{"x", "y"} {
		_, err := podA.CoreV1().ConfigMaps(ns).Create(ctx, configMap(t, ns, name, nil), metav1.CreateOptions{})
		wantAdmitted(t, "the leader pod's create", err)
	}
	_, err := podA.AppsV1().Deployments(ns).Create(ctx, deployment(ns, "d"), metav1.CreateOptions{})
	wantAdmitted(t, "the leader pod's create of a Deployment", err)
	wantAdmitted(t, "the leader pod's status write", writeStatus(ctx, podA, ns, "d", 1))
	wantAdmitted(t, "the leader pod's delete", podA.CoreV1().ConfigMaps(ns).Delete(ctx, "y", metav1.DeleteOptions{}))

	_, err = podB.CoreV1().ConfigMaps(ns).Create(ctx, configMap(t, ns, "by-b", nil), metav1.CreateOptions{})
	wantFenced(t, "a follower pod's create", err, "pod pod-b does not hold "+lease+": its holder is pod-a")
	_, err = clientAs(writer(ns), "").CoreV1().ConfigMaps(ns).Create(ctx, configMap(t, ns, "podless", nil), metav1.CreateOptions{})
	wantFenced(t, "a create with no pod name", err, "the request names no pod", fence.PodNameExtra)
	_, err = clientAs(writer(ns), "pod").CoreV1().ConfigMaps(ns).Create(ctx, configMap(t, ns, "prefix", nil), metav1.CreateOptions{})
	wantFenced(t, "a create by a pod whose name is a prefix of the holder's", err, "pod pod does not hold")
	_, err = admin.CoreV1().ConfigMaps(ns).Create(ctx, configMap(t, ns, "by-admin", nil), metav1.CreateOptions{})
	wantAdmitted(t, "another user's create", err)

	// Takeover: a releases, b (identity "<pod>_<random>") takes the Lease.
	const bID = "pod-b_0a1b2c3d4e"
	b := startElector(t, electorOpts{ns: ns, id: bID, release: true})
	a.stop(t)
	b.leads(t, 20*time.Second)
	testkit.Eventually(t, 10*time.Second, "the new leader pod's write to be admitted", func() bool {
		_, err = podB.CoreV1().ConfigMaps(ns).Create(ctx, configMap(t, ns, "by-b", nil), metav1.CreateOptions{})
		return err == nil
	})
	// Once the new holder is admitted, the API server has seen the
	// takeover: the old pod's writes are refused from here on.

	refused := "pod pod-a does not hold " + lease + ": its holder is " + bID
	wantFenced(t, "the old pod's delete", podA.CoreV1().ConfigMaps(ns).Delete(ctx, "x", metav1.DeleteOptions{}), refused)
	wantFenced(t, "the old pod's status write", writeStatus(ctx, podA, ns, "d", 2), refused)
	_, err = podA.CoreV1().ConfigMaps(ns).Create(ctx, configMap(t, ns, "late", nil), metav1.CreateOptions{})
	wantFenced(t, "the old pod's create", err, refused)
	if _, err := admin.CoreV1().ConfigMaps(ns).Get(ctx, "x", metav1.GetOptions{}); err != nil {
		t.Errorf("x after the old pod's refused delete: %v", err)
	}
	if d, err := admin.AppsV1().Deployments(ns).Get(ctx, "d", metav1.GetOptions{}); err != nil || d.Status.ObservedGeneration != 1 {
		t.Errorf("d after the old pod's refused status write: observedGeneration %v, err %v; want 1", d.Status.ObservedGeneration, err)
	}
	wantAdmitted(t, "the new leader pod's status write", writeStatus(ctx, podB, ns, "d", 3))
	wantAdmitted(t, "the new leader pod's delete", podB.CoreV1().ConfigMaps(ns).Delete(ctx, "x", metav1.DeleteOptions{}))

	// Released: nobody's pod may write.
	b.stop(t)
	testkit.Eventually(t, 10*time.Second, "the released Lease to refuse the last holder", func() bool {
		_, err = podB.CoreV1().ConfigMaps(ns).Create(ctx, configMap(t, ns, "after-release", nil), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		return err != nil
	})
	_, err = podB.CoreV1().ConfigMaps(ns).Create(ctx, configMap(t, ns, "after-release", nil), metav1.CreateOptions{})
	wantFenced(t, "the last holder's create after its release", err, "pod pod-b does not hold "+lease+": it has no holder")
}

// The pod-name extra the policy reads is the one the API server's own
// authenticator sets for a service account token bound to a pod.
func TestIdentityPolicyWithBoundToken(t *testing.T) {
	ns := newNamespace(t)
	ctx := context.Background()
	if _, err := admin.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: controllerSA}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pod, err := admin.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "pod-a"},
		Spec: corev1.PodSpec{
			ServiceAccountName: controllerSA,
			Containers:         []corev1.Container{{Name: "c", Image: "example.invalid/c"}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tr, err := admin.CoreV1().ServiceAccounts(ns).CreateToken(ctx, controllerSA, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{
			ExpirationSeconds: ptr.To[int64](600),
			BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("token bound to the pod: %v", err)
	}
	cfg := rest.AnonymousClientConfig(cp.Config())
	cfg.BearerToken = tr.Status.Token
	c := kubernetes.NewForConfigOrDie(cfg)
	review, err := c.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	u := review.Status.UserInfo
	if u.Username != writer(ns) || len(u.Extra[fence.PodNameExtra]) != 1 || u.Extra[fence.PodNameExtra][0] != "pod-a" {
		t.Fatalf("the bound token authenticates as %q with extra %v; want %q with %s=[pod-a]", u.Username, u.Extra, writer(ns), fence.PodNameExtra)
	}

	setLease(t, ns, leaseName, "pod-a", 0)
	installIdentityPolicy(t, ns)
	_, err = c.CoreV1().ConfigMaps(ns).Create(ctx, configMap(t, ns, "x", nil), metav1.CreateOptions{})
	wantAdmitted(t, "the leader pod's create with its own token", err)

	setLease(t, ns, leaseName, "pod-b", 1)
	testkit.Eventually(t, 10*time.Second, "the takeover to refuse the old pod", func() bool {
		return c.CoreV1().ConfigMaps(ns).Delete(ctx, "x", metav1.DeleteOptions{DryRun: []string{metav1.DryRunAll}}) != nil
	})
	err = c.CoreV1().ConfigMaps(ns).Delete(ctx, "x", metav1.DeleteOptions{})
	wantFenced(t, "the old pod's delete with its own token", err, "pod pod-a does not hold Lease "+ns+"/"+leaseName+": its holder is pod-b")
}
