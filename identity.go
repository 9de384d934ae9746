package leasehold

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
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
