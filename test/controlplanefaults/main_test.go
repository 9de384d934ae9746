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
	"testing"

	"k8s.io/client-go/kubernetes"

	"github.com/leasehold/leasehold/test/controlplane"
	"github.com/leasehold/leasehold/test/testkit"
)

var (
	cp    *controlplane.ControlPlane
	admin kubernetes.Interface
)

func TestMain(m *testing.M) {
	os.Exit(testkit.RunWithControlPlane(m, func(c *controlplane.ControlPlane) error {
		cp, admin = c, kubernetes.NewForConfigOrDie(c.Config())
		return nil
	}, controlplane.WithAPIServerFlag("watch-cache", "false")))
}

func newNamespace(t *testing.T) string { return testkit.Namespace(t, admin, "cpf") }

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
