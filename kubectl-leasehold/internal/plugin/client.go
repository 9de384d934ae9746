package plugin

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strings"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// userAgent identifies the plugin's requests in the API server's logs.
const userAgent = "kubectl-leasehold"

// clientFromFlags builds a clientset from the kubeconfig flags.
func (o *Options) clientFromFlags() (kubernetes.Interface, error) {
	if err := o.checkConfigExists(); err != nil {
		return nil, err
	}
	cfg, err := o.ConfigFlags.ToRESTConfig()
	if err != nil {
		return nil, o.explainConfigError(err)
	}
	cfg = rest.CopyConfig(cfg)
	cfg.UserAgent = userAgent
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("building a client for %s: %w", cfg.Host, err)
	}
	return cs, nil
}

// namespaceFromFlags is -n if given, else the namespace of the context,
// else "default".
func (o *Options) namespaceFromFlags() (string, error) {
	ns, _, err := o.ConfigFlags.ToRawKubeConfigLoader().Namespace()
	if err != nil {
		return "", o.explainConfigError(err)
	}
	return ns, nil
}

// checkConfigExists fails when there is no kubeconfig, no --server and no
// in-cluster config, where client-go would fall back to its legacy default,
// http://localhost:8080, and fail with "connection refused".
func (o *Options) checkConfigExists() error {
	raw, err := o.ConfigFlags.ToRawKubeConfigLoader().RawConfig()
	if err != nil || len(raw.Clusters) > 0 || os.Getenv("KUBERNETES_SERVICE_HOST") != "" ||
		(o.ConfigFlags.APIServer != nil && *o.ConfigFlags.APIServer != "") {
		return nil // ToRESTConfig tells
	}
	return o.explainConfigError(clientcmd.ErrEmptyConfig)
}

// explainConfigError turns an error from loading the kubeconfig into one
// that says what to do.
func (o *Options) explainConfigError(err error) error {
	loader := o.ConfigFlags.ToRawKubeConfigLoader()
	files := strings.Join(loader.ConfigAccess().GetLoadingPrecedence(), ":")
	if files == "" {
		files = "no kubeconfig file"
	}
	raw, rawErr := loader.RawConfig()
	wanted := ""
	if o.ConfigFlags.Context != nil {
		wanted = *o.ConfigFlags.Context
	}
	if wanted == "" && rawErr == nil {
		wanted = raw.CurrentContext
	}
	switch {
	case clientcmd.IsContextNotFound(err) || (rawErr == nil && wanted != "" && raw.Contexts[wanted] == nil):
		var names []string
		if rawErr == nil {
			for name := range raw.Contexts {
				names = append(names, name)
			}
		}
		slices.Sort(names)
		hint := "Fix: your kubeconfig has no contexts; create one with 'kubectl config set-context' or point --kubeconfig at the right file."
		if len(names) > 0 {
			hint = fmt.Sprintf("Fix: pass --context with one of: %s (list them with 'kubectl config get-contexts').", strings.Join(names, ", "))
		}
		return &hintError{err: fmt.Errorf("context %q does not exist in the kubeconfig (%s)", wanted, files), hint: hint}
	case errors.Is(err, fs.ErrNotExist) || strings.Contains(err.Error(), "no such file or directory"):
		return &hintError{
			err:  fmt.Errorf("reading the kubeconfig: %w", err),
			hint: "Fix: point --kubeconfig (or KUBECONFIG) at an existing file ('kubectl config view' shows what kubectl reads).",
		}
	case clientcmd.IsEmptyConfig(err):
		return &hintError{
			err:  fmt.Errorf("no kubeconfig found (looked at: %s)", files),
			hint: "Fix: set KUBECONFIG or pass --kubeconfig FILE, or run inside a Pod whose ServiceAccount can read Leases.",
		}
	}
	return &hintError{
		err:  fmt.Errorf("reading the kubeconfig (%s): %w", files, err),
		hint: "Fix: check the file with 'kubectl config view'.",
	}
}
