// Package kubectlplugin tests kubectl-leasehold through a real kubectl
// (built from source by hack/controlplane/build-kubectl.sh) against a real
// kube-apiserver and etcd: `kubectl leasehold ...` finds the plugin on PATH
// through kubectl's plugin discovery, as an operator runs it.
//
// TestMain builds the plugin from ../../kubectl-leasehold into a temporary
// directory put first on PATH, and starts one control plane for the
// package. Each test uses its own namespace.
package kubectlplugin

import (
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"

	"github.com/leasehold/leasehold/test/controlplane"
	"github.com/leasehold/leasehold/test/testkit"
)

// kubectlHint is what to do when kubectl has not been built.
const kubectlHint = "run hack/controlplane/build-kubectl.sh to build kubectl from source (a few minutes the first time)"

var (
	cp    *controlplane.ControlPlane
	admin kubernetes.Interface
	// kubectlBin is the kubectl built from source; workDir holds the
	// plugin binary and kubeconfigs; pluginEnv is the environment kubectl
	// runs with (PATH with workDir first, KUBECONFIG the admin's).
	kubectlBin, workDir string
	adminKubeconfig     string
	pluginEnv           []string
)

func TestMain(m *testing.M) { os.Exit(run(m)) }

// run checks for kubectl and builds the plugin into workDir, then runs the
// tests on a control plane.
func run(m *testing.M) int {
	fail := func(format string, args ...any) int {
		// Fail, never skip: a missing kubectl must not look like a
		// passing suite.
		fmt.Fprintf(os.Stderr, "FAIL: kubectlplugin: "+format+"\n", args...)
		return 1
	}

	dir, err := controlplane.BinDir()
	if err != nil {
		return fail("%v", err)
	}
	kubectlBin = filepath.Join(dir, "kubectl")
	if fi, err := os.Stat(kubectlBin); err != nil || fi.Mode().Perm()&fs.FileMode(0o111) == 0 {
		return fail("no kubectl at %s: %s", kubectlBin, kubectlHint)
	}

	workDir, err = os.MkdirTemp("", "kubectlplugin-")
	if err != nil {
		return fail("%v", err)
	}
	defer os.RemoveAll(workDir)
	src, err := filepath.Abs(filepath.Join("..", "..", "kubectl-leasehold"))
	if err != nil {
		return fail("%v", err)
	}
	started := time.Now()
	build := exec.Command("go", "build", "-o", filepath.Join(workDir, "kubectl-leasehold"), ".")
	build.Dir = src
	if out, err := build.CombinedOutput(); err != nil {
		return fail("building the plugin in %s: %v\n%s", src, err, out)
	}
	fmt.Fprintf(os.Stderr, "kubectlplugin: built kubectl-leasehold in %v\n", time.Since(started).Round(time.Millisecond))
	return testkit.RunWithControlPlane(m, setup)
}

// setup writes the admin's kubeconfig and the environment kubectl runs
// with.
func setup(c *controlplane.ControlPlane) error {
	cp, admin = c, kubernetes.NewForConfigOrDie(c.Config())
	adminKubeconfig = filepath.Join(workDir, "admin.kubeconfig")
	if err := cp.WriteKubeconfig(adminKubeconfig, nil); err != nil {
		return err
	}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PATH=") && !strings.HasPrefix(kv, "KUBECONFIG=") && !strings.HasPrefix(kv, "KUBECACHEDIR=") {
			pluginEnv = append(pluginEnv, kv)
		}
	}
	pluginEnv = append(pluginEnv,
		"PATH="+workDir+string(os.PathListSeparator)+os.Getenv("PATH"),
		"KUBECONFIG="+adminKubeconfig,
		"KUBECACHEDIR="+filepath.Join(workDir, "cache"),
	)
	return nil
}
