package leasehold

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"k8s.io/client-go/rest"
)

// serviceAccountNamespaceFile is where a pod finds its own namespace.
const serviceAccountNamespaceFile = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"

// DefaultIdentity returns hostname + "_" + a random suffix: unique per
// process, so two pods (or two restarts of one pod) never share an
// identity, yet the pod is recognisable in `kubectl get lease`.
func DefaultIdentity() (string, error) {
	host, err := os.Hostname()
	if err != nil {
		return "", fmt.Errorf("default identity: hostname: %w", err)
	}
	var b [5]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("default identity: random suffix: %w", err)
	}
	return host + "_" + hex.EncodeToString(b[:]), nil
}

// InClusterNamespace returns the namespace of the pod this process runs in,
// read from its service account, or an error outside a cluster.
func InClusterNamespace() (string, error) {
	b, err := os.ReadFile(serviceAccountNamespaceFile)
	if err != nil {
		return "", fmt.Errorf("in-cluster namespace: %w (outside a cluster, set LeaseLock.Namespace)", err)
	}
	ns := strings.TrimSpace(string(b))
	if ns == "" {
		return "", fmt.Errorf("in-cluster namespace: %s is empty", serviceAccountNamespaceFile)
	}
	return ns, nil
}

// RequestTimeout is the one rule that bounds each of the election's
// requests: max(renewDeadline/2, 1s), so that a hung request fails with
// time left in the deadline for another attempt, yet a slow but healthy
// server is not cut off. The elector applies it to its own requests
// itself, and cuts a renewal shorter still when less of the deadline
// remains. A zero renewDeadline means the default.
func RequestTimeout(renewDeadline time.Duration) time.Duration {
	if renewDeadline == 0 {
		renewDeadline = DefaultRenewDeadline
	}
	return max(renewDeadline/2, time.Second)
}

// WithRequestTimeout returns a copy of cfg whose requests time out after
// RequestTimeout(renewDeadline), except watches, which are long-running by
// design. (rest.Config.Timeout would cut every watch after the timeout
// too.)
//
// The elector needs no such wrapper: it bounds every request it makes.
// Use this only for a clientset that serves the election alone, to bound
// requests at the transport as well. Never wrap the clientset your
// controller shares: its own LISTs may rightly take longer.
func WithRequestTimeout(cfg *rest.Config, renewDeadline time.Duration) *rest.Config {
	out := rest.CopyConfig(cfg)
	d := RequestTimeout(renewDeadline)
	out.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return &requestTimeout{next: rt, timeout: d}
	})
	return out
}

// requestTimeout bounds each non-watch request, body included.
type requestTimeout struct {
	next    http.RoundTripper
	timeout time.Duration
}

func (t *requestTimeout) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Query().Get("watch") == "true" {
		return t.next.RoundTrip(req)
	}
	ctx, cancel := context.WithTimeout(req.Context(), t.timeout)
	resp, err := t.next.RoundTrip(req.WithContext(ctx))
	if err != nil {
		cancel()
		return nil, err
	}
	resp.Body = &cancelOnClose{ReadCloser: resp.Body, cancel: cancel}
	return resp, nil
}

// cancelOnClose releases a request's timeout when its body is closed.
type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (c *cancelOnClose) Close() error {
	err := c.ReadCloser.Close()
	c.cancel()
	return err
}
