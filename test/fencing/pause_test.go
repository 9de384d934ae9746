package fencing

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"

	"github.com/leasehold/leasehold"
	"github.com/leasehold/leasehold/fence"
	"github.com/leasehold/leasehold/test/testkit"
)

// helperEnv, set, makes the test binary run helperMain instead of the
// tests: a leasehold elector in its own process, for SIGSTOP.
const helperEnv = "LEASEHOLD_FENCE_HELPER"

// helperMain campaigns for $FENCE_NS/fenced as $FENCE_ID. Its work writes
// every 50ms, stamped with its term, as $FENCE_WRITER: an update of the
// ConfigMap "target" and the create of a new ConfigMap. It reports each
// write on stdout as
//
//	WRITE <seq> <update|create> <start unix nanos> <ok|fenced|error> <message>
//
// Like code that was running when its process was paused, it does not
// look at its ctx before writing; it stops 20 writes after ctx is
// cancelled.
func helperMain() int {
	var mu sync.Mutex
	say := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Printf(format+"\n", args...)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", os.Getenv("FENCE_KUBECONFIG"))
	if err != nil {
		say("EXIT kubeconfig: %v", err)
		return 1
	}
	ns, id := os.Getenv("FENCE_NS"), os.Getenv("FENCE_ID")
	electorClient := kubernetes.NewForConfigOrDie(leasehold.WithRequestTimeout(cfg, renewDeadline))
	wcfg := *cfg
	wcfg.Impersonate.UserName = os.Getenv("FENCE_WRITER")
	wc := kubernetes.NewForConfigOrDie(&wcfg)
	cms := wc.CoreV1().ConfigMaps(ns)

	result := func(err error) string {
		switch {
		case err == nil:
			return "ok -"
		case fence.IsFenced(err):
			return "fenced " + strconv.Quote(err.Error())
		default:
			return "error " + strconv.Quote(err.Error())
		}
	}
	var work sync.WaitGroup
	el, err := leasehold.New(leasehold.Config{
		Lock:          &leasehold.LeaseLock{Namespace: ns, Name: leaseName, Identity: id, Client: electorClient.CoordinationV1()},
		LeaseDuration: leaseDuration, RenewDeadline: renewDeadline, RetryPeriod: retryPeriod,
		Callbacks: leasehold.Callbacks{
			OnStartedLeading: func(ctx context.Context) {
				work.Add(1)
				defer work.Done()
				term, _ := leasehold.TermFromContext(ctx)
				say("LEADING %d", term.Transitions)
				after := 0
				for seq := 0; after < 20; seq++ {
					if ctx.Err() != nil {
						after++
					}
					rctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					start := time.Now()
					cm, err := cms.Get(rctx, "target", metav1.GetOptions{})
					if err == nil {
						cm.Data = map[string]string{"seq": strconv.Itoa(seq)}
						if err = fence.Stamp(ctx, cm); err == nil {
							_, err = cms.Update(rctx, cm, metav1.UpdateOptions{})
						}
					}
					say("WRITE %d update %d %s", seq, start.UnixNano(), result(err))
					start = time.Now()
					created := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("w-%d", seq)}}
					if err = fence.Stamp(ctx, created); err == nil {
						_, err = cms.Create(rctx, created, metav1.CreateOptions{})
					}
					say("WRITE %d create %d %s", seq, start.UnixNano(), result(err))
					cancel()
					time.Sleep(50 * time.Millisecond)
				}
			},
		},
	})
	if err != nil {
		say("EXIT new: %v", err)
		return 1
	}
	err = el.Run(klog.NewContext(context.Background(), logr.Discard()))
	work.Wait()
	say("EXIT %v", err)
	return 0
}

type helperWrite struct {
	seq     int
	op      string
	start   time.Time
	outcome string // ok, fenced or error
	message string
}

// helperProcess is a running helperMain.
type helperProcess struct {
	cmd     *exec.Cmd
	stderr  bytes.Buffer
	leading chan int32
	exited  chan string

	mu     sync.Mutex
	writes []helperWrite
}

func startHelper(t *testing.T, ns, id string) *helperProcess {
	t.Helper()
	kubeconfig := filepath.Join(t.TempDir(), "admin.kubeconfig")
	if err := cp.WriteKubeconfig(kubeconfig, adminConfig()); err != nil {
		t.Fatal(err)
	}
	h := &helperProcess{leading: make(chan int32, 1), exited: make(chan string, 1)}
	h.cmd = exec.Command(os.Args[0], "-test.run=^$")
	h.cmd.Env = append(os.Environ(), helperEnv+"=1", "FENCE_KUBECONFIG="+kubeconfig,
		"FENCE_NS="+ns, "FENCE_ID="+id, "FENCE_WRITER="+writer(ns))
	h.cmd.Stderr = &h.stderr
	out, err := h.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := h.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	read := make(chan struct{})
	go func() {
		defer close(read)
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			h.parse(sc.Text())
		}
	}()
	t.Cleanup(func() {
		_ = h.cmd.Process.Signal(syscall.SIGCONT)
		_ = h.cmd.Process.Kill()
		<-read
		_ = h.cmd.Wait()
		if t.Failed() && h.stderr.Len() > 0 {
			t.Logf("helper stderr:\n%s", h.stderr.String())
		}
	})
	return h
}

func (h *helperProcess) parse(line string) {
	kind, rest, _ := strings.Cut(line, " ")
	switch kind {
	case "LEADING":
		n, _ := strconv.Atoi(rest)
		h.leading <- int32(n)
	case "EXIT":
		h.exited <- rest
	case "WRITE":
		f := strings.SplitN(rest, " ", 5)
		if len(f) < 5 {
			return
		}
		seq, _ := strconv.Atoi(f[0])
		ns, _ := strconv.ParseInt(f[2], 10, 64)
		msg, err := strconv.Unquote(f[4])
		if err != nil {
			msg = f[4]
		}
		h.mu.Lock()
		h.writes = append(h.writes, helperWrite{seq: seq, op: f[1], start: time.Unix(0, ns), outcome: f[3], message: msg})
		h.mu.Unlock()
	}
}

func (h *helperProcess) snapshot() []helperWrite {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]helperWrite(nil), h.writes...)
}

// A leader process stopped with SIGSTOP while it leads, and resumed with
// SIGCONT after another replica took over, gets every write refused, and
// none of them is stored.
func TestPausedLeaderEveryWriteRefused(t *testing.T) {
	ns := newNamespace(t)
	ctx := context.Background()
	if _, err := admin.CoreV1().ConfigMaps(ns).Create(ctx, configMap(t, ns, "target", nil), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	h := startHelper(t, ns, "a")
	var term int32
	select {
	case term = <-h.leading:
	case <-time.After(20 * time.Second):
		t.Fatalf("the helper process did not lead within 20s; stderr:\n%s", h.stderr.String())
	}
	installStampPolicy(t, ns, false)
	enforced := time.Now()
	testkit.Eventually(t, 10*time.Second, "the leader's writes to be admitted under the policy", func() bool {
		n := 0
		for _, w := range h.snapshot() {
			if w.start.After(enforced) && w.outcome == "ok" {
				n++
			}
		}
		return n >= 4
	})

	if err := h.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stoppedAt := time.Now()
	admitted := make(chan leasehold.Term, 1)
	// For the failure message: when b started leading, and its last
	// refused write.
	var bLedAfter atomic.Int64
	var bLastRefusal atomic.Value
	startElector(t, electorOpts{ns: ns, id: "b", work: func(ctx context.Context) {
		bLedAfter.Store(int64(time.Since(stoppedAt)))
		term, _ := leasehold.TermFromContext(ctx)
		cm := configMap(t, ns, "b-own", nil)
		if err := fence.Stamp(ctx, cm); err != nil {
			t.Error(err)
			return
		}
		// The API server's copy of the Lease may lag the takeover by a
		// few milliseconds: retry a fenced write of the new term.
		for ctx.Err() == nil {
			_, err := clientAs(writer(ns), "").CoreV1().ConfigMaps(ns).Create(ctx, cm, metav1.CreateOptions{})
			if err == nil {
				admitted <- term
				break
			}
			if !fence.IsFenced(err) {
				t.Errorf("b's write: %v", err)
				return
			}
			bLastRefusal.Store(err.Error())
			time.Sleep(5 * time.Millisecond)
		}
		<-ctx.Done()
	}})
	var bTerm leasehold.Term
	select {
	case bTerm = <-admitted:
	case <-time.After(20 * time.Second):
		led := "b never led"
		if d := bLedAfter.Load(); d != 0 {
			led = fmt.Sprintf("b led %v after SIGSTOP", time.Duration(d))
		}
		l, err := admin.CoordinationV1().Leases(ns).Get(ctx, leaseName, metav1.GetOptions{})
		t.Fatalf("b did not take over and write within 20s: %s; its last refused write: %v; the Lease now: %+v (%v)",
			led, bLastRefusal.Load(), l, err)
	}
	target, err := admin.CoreV1().ConfigMaps(ns).Get(ctx, "target", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	contAt := time.Now()
	if err := h.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	select {
	case exit := <-h.exited:
		t.Logf("helper: EXIT %s", exit)
	case <-time.After(30 * time.Second):
		t.Fatal("the helper did not finish within 30s of SIGCONT")
	}

	var before, after, admittedAfter int
	for _, w := range h.snapshot() {
		switch {
		case w.start.Before(stoppedAt):
			before++
		case w.start.After(contAt):
			after++
			if w.outcome != "fenced" {
				admittedAfter++
				t.Errorf("write %d (%s) started %v after SIGCONT: %s %s; want it fenced", w.seq, w.op, w.start.Sub(contAt), w.outcome, w.message)
			} else if after == 1 {
				t.Logf("first refusal after SIGCONT (%v later): %s", w.start.Sub(contAt), w.message)
				want := fmt.Sprintf("stamped for term %d of a, but Lease %s/%s is in term %d of b", term, ns, leaseName, bTerm.Transitions)
				if !strings.Contains(w.message, want) {
					t.Errorf("refusal %q does not say %q", w.message, want)
				}
			}
			if w.op == "create" {
				_, err := admin.CoreV1().ConfigMaps(ns).Get(ctx, fmt.Sprintf("w-%d", w.seq), metav1.GetOptions{})
				if !apierrors.IsNotFound(err) {
					t.Errorf("w-%d, created %v after SIGCONT, is stored (get: %v)", w.seq, w.start.Sub(contAt), err)
				}
			}
		}
	}
	if after < 20 {
		t.Errorf("the helper made %d writes after SIGCONT; want at least 20", after)
	}
	now, err := admin.CoreV1().ConfigMaps(ns).Get(ctx, "target", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if now.ResourceVersion != target.ResourceVersion {
		t.Errorf("target changed after the takeover: resourceVersion %s -> %s, data %v, stamp %s/%s",
			target.ResourceVersion, now.ResourceVersion, now.Data, now.Annotations[fence.HolderAnnotation], now.Annotations[fence.TermAnnotation])
	}
	t.Logf("a (term %d) wrote %d times before SIGSTOP; paused %v; b took over in term %d; %d writes after SIGCONT, %d admitted",
		term, before, contAt.Sub(stoppedAt).Round(time.Millisecond), bTerm.Transitions, after, admittedAfter)
}
