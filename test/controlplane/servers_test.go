package controlplane_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/leasehold/leasehold/test/testkit"
)

// TestServers fails the control plane's processes the way the chaos
// harness does: etcd compacted, paused and killed, a kube-apiserver killed
// and restarted on the same port and certificates, a second kube-apiserver
// on the same etcd; each time a client sees the effect and the recovery.
func TestServers(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a control plane")
	}
	cp := testkit.StartControlPlane(t)
	ctx := context.Background()
	cfg := cp.Config()
	cfg.Timeout = 3 * time.Second
	cs := kubernetes.NewForConfigOrDie(cfg)
	// A write cut short may still land: a retry that finds it is done.
	write := func(name string) error {
		_, err := cs.CoreV1().ConfigMaps("default").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			return nil
		}
		return err
	}

	// Compaction: the revision moves with writes, and compacting twice to
	// one revision is not an error.
	rev0, err := cp.EtcdRevision(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := write("a"); err != nil {
		t.Fatal(err)
	}
	rev1, err := cp.CompactEtcd(ctx)
	if err != nil || rev1 <= rev0 {
		t.Fatalf("CompactEtcd = %d, %v; want > %d (a write came in between)", rev1, err, rev0)
	}
	if _, err := cp.CompactEtcd(ctx); err != nil {
		t.Fatalf("second compaction at one revision: %v", err)
	}

	etcd, err := cp.Etcd()
	if err != nil {
		t.Fatal(err)
	}
	api, err := cp.APIServer()
	if err != nil {
		t.Fatal(err)
	}
	if etcd.PID() == 0 || api.PID() == 0 || etcd.PID() == api.PID() {
		t.Fatalf("pids: etcd %d, kube-apiserver %d", etcd.PID(), api.PID())
	}

	// etcd paused: writes fail; resumed: they succeed.
	testkit.Must(t, etcd.Pause())
	// SIGSTOP takes effect asynchronously, and a write already inside etcd
	// may still land: within a few tries, writes must fail.
	tries := 0
	poll.Eventually(t, 30*time.Second, "a write to fail while etcd is stopped", func() bool {
		tries++
		return write(fmt.Sprint("paused-", tries)) != nil
	})
	testkit.Must(t, etcd.Resume())
	poll.Eventually(t, 30*time.Second, "a write after SIGCONT to etcd", func() bool { return write("b") == nil })

	// etcd killed: writes fail; restarted on the same data: the data is there.
	old := etcd.PID()
	testkit.Must(t, etcd.Kill())
	if err := write("c"); err == nil {
		t.Errorf("a write succeeded while etcd was dead")
	}
	testkit.Must(t, etcd.Start(ctx))
	if etcd.PID() == old {
		t.Errorf("etcd restarted with its old pid")
	}
	poll.Eventually(t, 30*time.Second, "a write after etcd's restart", func() bool { return write("c") == nil })
	if _, err := cs.CoreV1().ConfigMaps("default").Get(ctx, "a", metav1.GetOptions{}); err != nil {
		t.Errorf("ConfigMap written before etcd's restart: %v", err)
	}

	// kube-apiserver killed: the port refuses; restarted: same address,
	// same CA, same client certificate.
	testkit.Must(t, api.Kill())
	if _, err := cs.CoreV1().ConfigMaps("default").Get(ctx, "a", metav1.GetOptions{}); err == nil || !strings.Contains(err.Error(), "refused") {
		t.Errorf("GET with kube-apiserver dead: %v, want connection refused", err)
	}
	testkit.Must(t, api.Start(ctx))
	if _, err := cs.CoreV1().ConfigMaps("default").Get(ctx, "a", metav1.GetOptions{}); err != nil {
		t.Errorf("GET after kube-apiserver's restart: %v", err)
	}

	// kube-apiserver paused: a request times out.
	testkit.Must(t, api.Pause())
	if _, err := cs.CoreV1().ConfigMaps("default").Get(ctx, "a", metav1.GetOptions{}); err == nil {
		t.Errorf("GET answered while kube-apiserver was stopped")
	}
	testkit.Must(t, api.Resume())
	poll.Eventually(t, 10*time.Second, "a GET after SIGCONT", func() bool {
		_, err := cs.CoreV1().ConfigMaps("default").Get(ctx, "a", metav1.GetOptions{})
		return err == nil
	})

	// A second kube-apiserver on the same etcd sees the first one's writes.
	api2, err := cp.AddAPIServer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if api2.Host() == api.Host() {
		t.Fatalf("second kube-apiserver on the first one's address %s", api.Host())
	}
	cs2 := kubernetes.NewForConfigOrDie(api2.Config())
	if _, err := cs2.CoreV1().ConfigMaps("default").Get(ctx, "c", metav1.GetOptions{}); err != nil {
		t.Errorf("GET through the second kube-apiserver: %v", err)
	}
	all, err := cp.APIServers()
	if err != nil || len(all) != 2 {
		t.Errorf("APIServers = %d, %v; want 2", len(all), err)
	}
}

// poll polls every 50ms: each of its conditions makes a request.
var poll = testkit.Poller{Every: 50 * time.Millisecond}
