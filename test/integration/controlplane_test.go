package integration

import (
	"context"
	"path/filepath"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/leasehold/leasehold/test/testkit"
)

// A kubeconfig written by WriteKubeconfig reaches the control plane as the
// user it was written for, as a separate process would use it.
func TestWriteKubeconfig(t *testing.T) {
	ns := newNamespace(t)
	dir := t.TempDir()

	adminPath := filepath.Join(dir, "admin.kubeconfig")
	testkit.Must(t, cp.WriteKubeconfig(adminPath, nil))
	cfg, err := clientcmd.BuildConfigFromFlags("", adminPath)
	testkit.Must(t, err)
	if _, err := kubernetes.NewForConfigOrDie(cfg).CoreV1().Namespaces().Get(context.Background(), ns, metav1.GetOptions{}); err != nil {
		t.Fatalf("admin kubeconfig: %v", err)
	}

	user, err := cp.AddUser("kubeconfig-user", nil)
	testkit.Must(t, err)
	userPath := filepath.Join(dir, "user.kubeconfig")
	testkit.Must(t, cp.WriteKubeconfig(userPath, user))
	cfg, err = clientcmd.BuildConfigFromFlags("", userPath)
	testkit.Must(t, err)
	_, err = kubernetes.NewForConfigOrDie(cfg).CoreV1().Namespaces().Get(context.Background(), ns, metav1.GetOptions{})
	if err == nil || !isForbidden(err) {
		t.Fatalf("user kubeconfig: GET namespace answered %v, want 403 for an unbound user", err)
	}
}
