package controlplane

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"k8s.io/client-go/rest"
)

// Server is one process of the control plane, etcd or a kube-apiserver,
// that a test can fail on purpose: SIGKILL and start again on the same
// ports and data directory, SIGSTOP and SIGCONT (Linux only).
//
//	api, _ := cp.APIServer()
//	_ = api.Kill()
//	_ = api.Start(ctx) // same flags, ports, certificates; waits until ready
//	etcd, _ := cp.Etcd()
//	_ = etcd.Pause()
//	_ = etcd.Resume()
//
// The first etcd and kube-apiserver are envtest's until killed; a Server
// restarted by Start, or added by AddAPIServer, is this package's own
// child, stopped by ControlPlane.Stop.
type Server struct {
	Name string // "etcd", "kube-apiserver", "kube-apiserver-2", ...

	c      *ControlPlane
	path   string
	args   []string
	health string // GET, 200 when ready
	host   string // a kube-apiserver's https://host:port

	mu      sync.Mutex
	pid     int
	cmd     *exec.Cmd     // nil while the process is envtest's
	done    chan struct{} // closed when cmd has exited
	paused  bool
	running bool
}

// servers is the control plane's set of Servers, found or made on demand.
type servers struct {
	mu   sync.Mutex
	etcd *Server
	api  []*Server
}

// Etcd returns etcd's process.
func (c *ControlPlane) Etcd() (*Server, error) {
	c.srv.mu.Lock()
	defer c.srv.mu.Unlock()
	if c.srv.etcd != nil {
		return c.srv.etcd, nil
	}
	e := c.env.ControlPlane.Etcd
	if e == nil || e.URL == nil {
		return nil, errors.New("controlplane: etcd has not started")
	}
	s, err := c.findChild("etcd", filepath.Join(c.binDir, "etcd"), "--listen-client-urls="+e.URL.String())
	if err != nil {
		return nil, err
	}
	s.health = e.URL.String() + "/health"
	c.srv.etcd = s
	return s, nil
}

// APIServer returns the first kube-apiserver's process, the one Config
// talks to.
func (c *ControlPlane) APIServer() (*Server, error) {
	c.srv.mu.Lock()
	defer c.srv.mu.Unlock()
	return c.firstAPIServer()
}

func (c *ControlPlane) firstAPIServer() (*Server, error) {
	if len(c.srv.api) > 0 {
		return c.srv.api[0], nil
	}
	u, err := url.Parse(c.admin.Host)
	if err != nil {
		return nil, err
	}
	s, err := c.findChild("kube-apiserver", filepath.Join(c.binDir, "kube-apiserver"), "--secure-port="+u.Port())
	if err != nil {
		return nil, err
	}
	s.host = strings.TrimSuffix(c.admin.Host, "/")
	s.health = s.host + "/readyz"
	c.srv.api = append(c.srv.api, s)
	return s, nil
}

// AddAPIServer starts one more kube-apiserver on the same etcd, with the
// first one's flags and certificates but its own secure port (as in an HA
// control plane behind a load balancer), and waits until it is ready.
// Its Config reaches it with the admin credentials.
func (c *ControlPlane) AddAPIServer(ctx context.Context) (*Server, error) {
	c.srv.mu.Lock()
	first, err := c.firstAPIServer()
	n := len(c.srv.api) + 1
	c.srv.mu.Unlock()
	if err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	args := make([]string, len(first.args))
	for i, a := range first.args {
		if strings.HasPrefix(a, "--secure-port=") {
			a = "--secure-port=" + strconv.Itoa(port)
		}
		args[i] = a
	}
	host := "https://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	s := &Server{Name: fmt.Sprintf("kube-apiserver-%d", n), c: c, path: first.path, args: args, host: host, health: host + "/readyz"}
	if err := s.Start(ctx); err != nil {
		return nil, err
	}
	c.srv.mu.Lock()
	c.srv.api = append(c.srv.api, s)
	c.srv.mu.Unlock()
	return s, nil
}

// APIServers returns every kube-apiserver known so far: the first, then
// those added by AddAPIServer.
func (c *ControlPlane) APIServers() ([]*Server, error) {
	c.srv.mu.Lock()
	defer c.srv.mu.Unlock()
	if _, err := c.firstAPIServer(); err != nil {
		return nil, err
	}
	return append([]*Server(nil), c.srv.api...), nil
}

// EtcdURL returns etcd's client URL (plain HTTP on 127.0.0.1).
func (c *ControlPlane) EtcdURL() string {
	if e := c.env.ControlPlane.Etcd; e != nil && e.URL != nil {
		return e.URL.String()
	}
	return ""
}

// EtcdRevision returns etcd's current revision (the newest
// resourceVersion of anything in the cluster), through etcd's JSON gateway.
func (c *ControlPlane) EtcdRevision(ctx context.Context) (int64, error) {
	var out struct {
		Header struct {
			Revision string `json:"revision"`
		} `json:"header"`
	}
	if err := c.etcdCall(ctx, "/v3/maintenance/status", map[string]any{}, &out); err != nil {
		return 0, err
	}
	return strconv.ParseInt(out.Header.Revision, 10, 64)
}

// CompactEtcd compacts etcd's history up to its current revision, as
// kube-apiserver's periodic compaction does (--etcd-compaction-interval),
// and returns that revision: a watch that resumes from an older
// resourceVersion, where no watch cache answers it, gets 410 Gone.
func (c *ControlPlane) CompactEtcd(ctx context.Context) (int64, error) {
	rev, err := c.EtcdRevision(ctx)
	if err != nil {
		return 0, err
	}
	err = c.etcdCall(ctx, "/v3/kv/compaction", map[string]any{"revision": strconv.FormatInt(rev, 10), "physical": true}, nil)
	if err != nil && strings.Contains(err.Error(), "compacted") {
		err = nil // compacted to this revision already
	}
	return rev, err
}

func (c *ControlPlane) etcdCall(ctx context.Context, path string, in, out any) error {
	base := c.EtcdURL()
	if base == "" {
		return errors.New("controlplane: etcd has not started")
	}
	body, err := json.Marshal(in)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("controlplane: etcd %s: %w", path, err)
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	_, _ = buf.ReadFrom(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("controlplane: etcd %s: %s: %s", path, resp.Status, strings.TrimSpace(buf.String()))
	}
	if out != nil {
		return json.Unmarshal(buf.Bytes(), out)
	}
	return nil
}

// Config returns an admin config for this kube-apiserver (nil for etcd).
func (s *Server) Config() *rest.Config {
	if s.host == "" {
		return nil
	}
	cfg := rest.CopyConfig(s.c.admin)
	cfg.Host = s.host
	return cfg
}

// Host returns a kube-apiserver's https://127.0.0.1:port, "" for etcd.
func (s *Server) Host() string { return s.host }

// PID returns the process id of the current incarnation, 0 if it is not
// running.
func (s *Server) PID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.running {
		return 0
	}
	return s.pid
}

// Kill sends SIGKILL and waits until the process has exited.
func (s *Server) Kill() error {
	s.mu.Lock()
	if !s.running {
		s.mu.Unlock()
		return fmt.Errorf("controlplane: kill %s: not running", s.Name)
	}
	pid, done := s.pid, s.done
	err := syscall.Kill(pid, syscall.SIGKILL)
	s.running, s.paused = false, false
	s.mu.Unlock()
	if err != nil {
		return fmt.Errorf("controlplane: kill %s (pid %d): %w", s.Name, pid, err)
	}
	return waitGone(pid, done, 30*time.Second)
}

// Pause sends SIGSTOP.
func (s *Server) Pause() error { return s.signal(syscall.SIGSTOP, true) }

// Resume sends SIGCONT.
func (s *Server) Resume() error { return s.signal(syscall.SIGCONT, false) }

func (s *Server) signal(sig syscall.Signal, paused bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.running {
		return fmt.Errorf("controlplane: %v %s: not running", sig, s.Name)
	}
	if err := syscall.Kill(s.pid, sig); err != nil {
		return fmt.Errorf("controlplane: %v %s (pid %d): %w", sig, s.Name, s.pid, err)
	}
	s.paused = paused
	return nil
}

// Start starts a killed server again with the same binary and flags (so
// the same ports, data directory and certificates), and waits until it is
// ready or ctx ends.
func (s *Server) Start(ctx context.Context) error {
	s.mu.Lock()
	if s.running {
		s.mu.Unlock()
		return fmt.Errorf("controlplane: start %s: already running (pid %d)", s.Name, s.pid)
	}
	cmd := exec.Command(s.path, s.args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		s.mu.Unlock()
		return fmt.Errorf("controlplane: start %s: %w", s.Name, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	s.cmd, s.done, s.pid, s.running, s.paused = cmd, done, cmd.Process.Pid, true, false
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	if err := waitHealthy(ctx, s.health, done); err != nil {
		return fmt.Errorf("controlplane: start %s: %w", s.Name, err)
	}
	return nil
}

// WaitReady waits until the server answers its health check (etcd's
// /health, kube-apiserver's /readyz) or ctx ends.
func (s *Server) WaitReady(ctx context.Context) error {
	s.mu.Lock()
	done := s.done
	s.mu.Unlock()
	return waitHealthy(ctx, s.health, done)
}

// terminate stops the server for good: SIGCONT, SIGTERM, and SIGKILL if
// it has not exited within 20s.
func (s *Server) terminate() error {
	s.mu.Lock()
	if !s.running {
		s.mu.Unlock()
		return nil
	}
	pid, done := s.pid, s.done
	_ = syscall.Kill(pid, syscall.SIGCONT)
	err := syscall.Kill(pid, syscall.SIGTERM)
	s.running, s.paused = false, false
	s.mu.Unlock()
	if err != nil {
		return nil // already gone
	}
	if waitGone(pid, done, 20*time.Second) != nil {
		_ = syscall.Kill(pid, syscall.SIGKILL)
		return waitGone(pid, done, 10*time.Second)
	}
	return nil
}

// stopServers ends every server this package knows about, kube-apiservers
// first, so that envtest's Stop finds them exited and only removes the
// directories.
func (c *ControlPlane) stopServers() error {
	c.srv.mu.Lock()
	all := append([]*Server(nil), c.srv.api...)
	if c.srv.etcd != nil {
		all = append(all, c.srv.etcd)
	}
	c.srv.mu.Unlock()
	var errs []error
	for _, s := range all {
		if err := s.terminate(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// findChild finds the process this test process started (through
// envtest) from path with the argument key, and records its command line
// so that it can be started again.
func (c *ControlPlane) findChild(name, path, key string) (*Server, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("controlplane: find %s: %w", name, err)
	}
	self := os.Getpid()
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if ppid, ok := parentOf(pid); !ok || ppid != self {
			continue
		}
		raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil {
			continue
		}
		argv := strings.Split(strings.TrimSuffix(string(raw), "\x00"), "\x00")
		if len(argv) == 0 || argv[0] != path {
			continue
		}
		for _, a := range argv[1:] {
			if a == key {
				return &Server{Name: name, c: c, path: path, args: argv[1:], pid: pid, running: true}, nil
			}
		}
	}
	return nil, fmt.Errorf("controlplane: no child process %s with %s", path, key)
}

// parentOf returns the parent pid of a live (not zombie) process.
func parentOf(pid int) (int, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, false
	}
	// pid (comm) state ppid ...; comm may hold spaces and parentheses.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 2 || f[0] == "Z" || f[0] == "X" {
		return 0, false
	}
	ppid, err := strconv.Atoi(f[1])
	return ppid, err == nil
}

// waitGone waits until process pid has exited: done closes for a process
// of ours; for one of envtest's, its /proc entry goes or turns zombie.
func waitGone(pid int, done <-chan struct{}, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if done != nil {
			select {
			case <-done:
				return nil
			default:
			}
		} else if _, alive := parentOf(pid); !alive {
			// Give envtest's reaper time to note the exit, so that its
			// Stop does not signal a pid that is gone.
			time.Sleep(50 * time.Millisecond)
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("controlplane: pid %d still running %v after the signal", pid, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

var insecureClient = &http.Client{
	Timeout:   2 * time.Second,
	Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, DisableKeepAlives: true},
}

func waitHealthy(ctx context.Context, health string, done <-chan struct{}) error {
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, health, nil)
		if err != nil {
			return err
		}
		if resp, err := insecureClient.Do(req); err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("not ready (%s): %w", health, ctx.Err())
		case <-done:
			return fmt.Errorf("exited before it was ready (%s)", health)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}
