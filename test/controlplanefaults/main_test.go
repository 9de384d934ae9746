// Package controlplanefaults runs leasehold electors against a real
// kube-apiserver and etcd that fail under them: etcd compacted, the API
// server killed and restarted. The control plane runs with
// --watch-cache=false, so that every watch is served by etcd and a watch
// resumed from a compacted resourceVersion gets a real 410 Gone from the
// server (with the watch cache, the server replays its own history and
// answers 410 only for versions older than it keeps).
package controlplanefaults

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/leasehold/leasehold/test/controlplane"
)

var (
	cp    *controlplane.ControlPlane
	admin kubernetes.Interface
)

func TestMain(m *testing.M) {
	ctrllog.SetLogger(logr.Discard())
	var err error
	cp, err = controlplane.Start(controlplane.WithAPIServerFlag("watch-cache", "false"))
	if err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: these tests need a real control plane: %v\n", err)
		os.Exit(1)
	}
	admin = kubernetes.NewForConfigOrDie(cp.Config())
	code := m.Run()
	if err := cp.Stop(); err != nil {
		fmt.Fprintf(os.Stderr, "stopping the control plane: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

var nsSeq atomic.Int32

func newNamespace(t *testing.T) string {
	t.Helper()
	base := strings.ToLower(regexp.MustCompile(`[^a-zA-Z0-9]+`).ReplaceAllString(strings.TrimPrefix(t.Name(), "Test"), "-"))
	if len(base) > 40 {
		base = base[:40]
	}
	name := fmt.Sprintf("cpf-%s-%d", strings.Trim(base, "-"), nsSeq.Add(1))
	ctx := context.Background()
	if _, err := admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create namespace %s: %v", name, err)
	}
	t.Cleanup(func() { _ = admin.CoreV1().Namespaces().Delete(context.Background(), name, metav1.DeleteOptions{}) })
	return name
}

// etcdPut writes a key straight into etcd (its JSON gateway), moving its
// revision on, as another API server's writes would while this one is down.
func etcdPut(ctx context.Context, key, value string) error {
	body, _ := json.Marshal(map[string]string{
		"key":   base64.StdEncoding.EncodeToString([]byte(key)),
		"value": base64.StdEncoding.EncodeToString([]byte(value)),
	})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, cp.EtcdURL()+"/v3/kv/put", bytes.NewReader(body))
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("etcd put: %s", resp.Status)
	}
	return nil
}

func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", within, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
