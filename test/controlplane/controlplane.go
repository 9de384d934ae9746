// Package controlplane starts a real etcd and kube-apiserver, built from
// source by hack/controlplane/build.sh, through controller-runtime's envtest.
// The integration tests use it, and so can demo, bench and chaos programs
// that need a real API server.
//
//	cp, err := controlplane.Start()
//	if err != nil { ... }
//	defer cp.Stop()
//	admin := cp.Config()
//	user, err := cp.AddUser("elector", nil) // no rights until bound by RBAC
//	err = cp.WriteKubeconfig("/tmp/elector.kubeconfig", user)
//
// The API server runs with --authorization-mode=RBAC, so users made with
// AddUser can do only what a Role grants them. Each Start runs its own etcd
// with its data in a temporary directory; Stop removes it.
//
// envtest logs through controller-runtime's logger (sigs.k8s.io/
// controller-runtime/pkg/log); programs that want its output should call
// log.SetLogger before Start.
package controlplane

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// EnvDir names the environment variable that overrides the directory
// holding the kube-apiserver and etcd binaries.
const EnvDir = "LEASEHOLD_CONTROLPLANE_DIR"

// BuildHint is what to do when the binaries are missing.
const BuildHint = "run 'make controlplane' (hack/controlplane/build.sh) to build kube-apiserver and etcd from source (~12 min the first time)"

// ErrBinariesMissing is wrapped by Start's error when kube-apiserver or
// etcd is not found. The error's text ends with BuildHint.
var ErrBinariesMissing = errors.New("control plane binaries missing")

// startTimeout bounds the start of each component (envtest's default, 20s,
// is tight on a loaded 2-core machine). KUBEBUILDER_CONTROLPLANE_START_TIMEOUT
// still overrides it.
const startTimeout = 90 * time.Second

// ControlPlane is a running etcd and kube-apiserver.
type ControlPlane struct {
	env    *envtest.Environment
	admin  *rest.Config
	binDir string
	srv    servers // processes a test fails on purpose (servers.go)
	// StartupTime is how long Start took, from launching etcd to the API
	// server serving the default namespace.
	StartupTime time.Duration
}

// BinDir returns the directory that holds kube-apiserver and etcd: the
// value of LEASEHOLD_CONTROLPLANE_DIR if set, else bin/controlplane under
// the repository root, found by walking up from the working directory to
// the first directory that contains bin/controlplane or .git.
func BinDir() (string, error) {
	if dir := os.Getenv(EnvDir); dir != "" {
		return filepath.Abs(dir)
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("controlplane: working directory: %w", err)
	}
	for dir := wd; ; {
		if isDir(filepath.Join(dir, "bin", "controlplane")) || exists(filepath.Join(dir, ".git")) {
			return filepath.Join(dir, "bin", "controlplane"), nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("controlplane: no directory containing bin/controlplane or .git above %s (set %s to the directory holding kube-apiserver and etcd): %w; %s",
				wd, EnvDir, ErrBinariesMissing, BuildHint)
		}
		dir = parent
	}
}

// Option changes how Start launches the control plane.
type Option func(*options)

type options struct {
	apiserverFlags [][]string // name, values...
}

// WithAPIServerFlag sets an extra kube-apiserver flag, e.g.
// WithAPIServerFlag("feature-gates", "ShardedListAndWatch=true").
func WithAPIServerFlag(name string, values ...string) Option {
	return func(o *options) { o.apiserverFlags = append(o.apiserverFlags, append([]string{name}, values...)) }
}

// Start launches etcd and kube-apiserver from BinDir and waits until the API
// server serves requests. The caller must call Stop.
func Start(opts ...Option) (*ControlPlane, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	dir, err := BinDir()
	if err != nil {
		return nil, err
	}
	apiserver, etcd := filepath.Join(dir, "kube-apiserver"), filepath.Join(dir, "etcd")
	var missing []string
	for _, bin := range []string{apiserver, etcd} {
		if !isExecutable(bin) {
			missing = append(missing, bin)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("controlplane: %w: %v not found or not executable: %s", ErrBinariesMissing, missing, BuildHint)
	}

	env := &envtest.Environment{BinaryAssetsDirectory: dir}
	if os.Getenv("KUBEBUILDER_CONTROLPLANE_START_TIMEOUT") == "" {
		env.ControlPlaneStartTimeout = startTimeout
	}
	// Explicit paths, so that KUBEBUILDER_ASSETS or TEST_ASSET_* in the
	// environment cannot swap in other binaries.
	env.ControlPlane.Etcd = &envtest.Etcd{Path: etcd}
	api := env.ControlPlane.GetAPIServer()
	api.Path = apiserver
	// envtest defaults to RBAC already; say so explicitly, since the RBAC
	// tests depend on it.
	api.Configure().Set("authorization-mode", "RBAC")
	for _, f := range o.apiserverFlags {
		api.Configure().Set(f[0], f[1:]...)
	}

	started := time.Now()
	cfg, err := env.Start()
	if err != nil {
		_ = env.Stop() // whatever did start
		return nil, fmt.Errorf("controlplane: start kube-apiserver and etcd from %s: %w", dir, err)
	}
	return &ControlPlane{env: env, admin: cfg, binDir: dir, StartupTime: time.Since(started)}, nil
}

// Config returns a copy of the admin (system:masters) config.
func (c *ControlPlane) Config() *rest.Config {
	return rest.CopyConfig(c.admin)
}

// BinDir returns the directory the binaries were started from.
func (c *ControlPlane) BinDir() string { return c.binDir }

// AddUser provisions a user authenticated by a client certificate, in the
// given groups, and returns a config for it. The user has no rights beyond
// what RBAC grants its name or groups.
func (c *ControlPlane) AddUser(name string, groups []string) (*rest.Config, error) {
	u, err := c.env.AddUser(envtest.User{Name: name, Groups: groups}, &rest.Config{QPS: 1000, Burst: 2000})
	if err != nil {
		return nil, fmt.Errorf("controlplane: add user %q: %w", name, err)
	}
	return u.Config(), nil
}

// WriteKubeconfig writes a kubeconfig file for cfg (the admin config if
// nil) to path, with certificates inlined, so that a separate process can
// be pointed at this control plane with --kubeconfig or KUBECONFIG.
func (c *ControlPlane) WriteKubeconfig(path string, cfg *rest.Config) error {
	if cfg == nil {
		cfg = c.admin
	}
	kc, err := kubeconfigFor(cfg)
	if err != nil {
		return err
	}
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		return fmt.Errorf("controlplane: write kubeconfig %s: %w", path, err)
	}
	return nil
}

func kubeconfigFor(cfg *rest.Config) (*clientcmdapi.Config, error) {
	const name = "leasehold-envtest"
	ca := cfg.CAData
	if len(ca) == 0 && cfg.CAFile != "" {
		b, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("controlplane: read CA: %w", err)
		}
		ca = b
	}
	server := cfg.Host
	if cfg.APIPath != "" && cfg.APIPath != "/api" && cfg.APIPath != "/apis" {
		server += cfg.APIPath
	}
	auth := &clientcmdapi.AuthInfo{
		ClientCertificateData: cfg.CertData,
		ClientKeyData:         cfg.KeyData,
		ClientCertificate:     cfg.CertFile,
		ClientKey:             cfg.KeyFile,
		Token:                 cfg.BearerToken,
		TokenFile:             cfg.BearerTokenFile,
		Username:              cfg.Username,
		Password:              cfg.Password,
	}
	kc := clientcmdapi.NewConfig()
	kc.Clusters[name] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: ca, TLSServerName: cfg.ServerName}
	kc.AuthInfos[name] = auth
	kc.Contexts[name] = &clientcmdapi.Context{Cluster: name, AuthInfo: name, Namespace: "default"}
	kc.CurrentContext = name
	return kc, nil
}

// Stop stops kube-apiserver and etcd and removes their data.
func (c *ControlPlane) Stop() error {
	serr := c.stopServers()
	if err := errors.Join(c.env.Stop(), serr); err != nil {
		return fmt.Errorf("controlplane: stop: %w", err)
	}
	return nil
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func isDir(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.IsDir()
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&fs.FileMode(0o111) != 0
}
