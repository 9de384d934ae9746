package bench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"k8s.io/client-go/kubernetes"
)

// Machine describes where the run took place.
type Machine struct {
	CPUs     int
	CPUModel string
	MemTotal string
	Kernel   string
}

// Versions of what was measured.
type Versions struct {
	Go         string
	Kubernetes string // kube-apiserver --version
	Etcd       string // etcd --version
	ClientGo   string // k8s.io/client-go in this build
}

func machineInfo() Machine {
	m := Machine{CPUs: runtime.NumCPU(), CPUModel: "unknown", MemTotal: "unknown"}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
				f := strings.Fields(v)
				if kb, err := strconv.ParseFloat(f[0], 64); err == nil {
					m.MemTotal = fmt.Sprintf("%.1f GiB", kb/1024/1024)
				}
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = "Linux " + strings.TrimSpace(string(b))
	}
	return m
}

func versions(binDir string) Versions {
	v := Versions{Go: runtime.Version(), Kubernetes: "unknown", Etcd: "unknown", ClientGo: "unknown"}
	if out, err := exec.Command(filepath.Join(binDir, "kube-apiserver"), "--version").Output(); err == nil {
		v.Kubernetes = strings.TrimPrefix(strings.TrimSpace(string(out)), "Kubernetes ")
	}
	if out, err := exec.Command(filepath.Join(binDir, "etcd"), "--version").Output(); err == nil {
		for _, line := range strings.Split(string(out), "\n") {
			if s, ok := strings.CutPrefix(line, "etcd Version:"); ok {
				v.Etcd = strings.TrimSpace(s)
			}
		}
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == "k8s.io/client-go" {
				v.ClientGo = d.Version
				if d.Replace != nil {
					v.ClientGo = d.Replace.Version
				}
			}
		}
	}
	return v
}

// serverCPU is the CPU time used so far by this process's children named
// kube-apiserver or etcd (the control plane envtest started).
func serverCPU() time.Duration {
	self := os.Getpid()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	var total time.Duration
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		open, closing := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
		if open < 0 || closing < open {
			continue
		}
		comm := string(b[open+1 : closing])
		if comm != "kube-apiserver" && comm != "etcd" {
			continue
		}
		// Fields after the comm: state(3) ppid(4) ... utime(14) stime(15).
		f := strings.Fields(string(b[closing+1:]))
		if len(f) < 13 {
			continue
		}
		if ppid, _ := strconv.Atoi(f[1]); ppid != self {
			continue
		}
		utime, _ := strconv.ParseInt(f[11], 10, 64)
		stime, _ := strconv.ParseInt(f[12], 10, 64)
		total += time.Duration(utime+stime) * (time.Second / 100) // USER_HZ
	}
	return total
}

// FindRoot returns the root of the leasehold repository: the first
// directory at or above the working directory whose go.mod declares
// module github.com/leasehold/leasehold.
func FindRoot() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for dir := wd; ; {
		if f, err := os.Open(filepath.Join(dir, "go.mod")); err == nil {
			sc := bufio.NewScanner(f)
			isRoot := sc.Scan() && strings.TrimSpace(sc.Text()) == "module github.com/leasehold/leasehold"
			f.Close()
			if isRoot {
				return dir, nil
			}
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod of module github.com/leasehold/leasehold at or above %s", wd)
		}
		dir = parent
	}
}

// runMicro runs the root package's Go benchmarks and returns their output.
func runMicro(ctx context.Context, root, benchtime string) (string, error) {
	if root == "" {
		var err error
		if root, err = FindRoot(); err != nil {
			return "", err
		}
	}
	args := []string{"test", "-run", "^$", "-bench", ".", "-benchmem"}
	if benchtime != "" {
		args = append(args, "-benchtime", benchtime)
	}
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("go %s in %s: %w\n%s", strings.Join(args, " "), root, err, out)
	}
	return string(out), nil
}

// serverMetric sums the samples of one counter in kube-apiserver's
// /metrics (all label sets), -1 if it cannot be read.
func serverMetric(ctx context.Context, cs kubernetes.Interface, name string) float64 {
	body, err := cs.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return -1
	}
	total := 0.0
	for _, line := range strings.Split(string(body), "\n") {
		if !strings.HasPrefix(line, name) {
			continue
		}
		rest := line[len(name):]
		if rest == "" || (rest[0] != '{' && rest[0] != ' ') {
			continue
		}
		f := strings.Fields(line)
		if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
			total += v
		}
	}
	return total
}
