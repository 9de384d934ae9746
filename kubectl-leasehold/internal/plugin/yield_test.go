package plugin

import (
	"context"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/utils/ptr"

	"github.com/leasehold/leasehold/internal/leaserecord"
)

// leader plays a leasehold leader with handoff support on a fake
// clientset: when the preferred-holder annotation appears, it hands the
// Lease to the candidate it names (to successor for "*"), releasing it
// first if release is set, and clears the annotation if clear is set.
type leader struct {
	successor      string // who takes it for "*", or instead of the one asked if override
	override       bool   // hand to successor whatever was asked
	release        bool
	clear          bool
	releaseOnly    bool // release and let nobody take it
	mu             sync.Mutex
	requested      []string // annotation values seen
	handedOverWhen time.Time
}

func (ld *leader) run(t *testing.T, client kubernetes.Interface, ns, name string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	leases := client.CoordinationV1().Leases(ns)
	w, err := leases.Watch(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); w.Stop(); <-done })
	go func() {
		defer close(done)
		for ev := range w.ResultChan() {
			l, ok := ev.Object.(*coordinationv1.Lease)
			if !ok || l.Name != name || ev.Type != watch.Modified {
				continue
			}
			want := l.Annotations[PreferredHolderAnnotation]
			if want == "" || leaserecord.Holder(l) == "" {
				continue
			}
			ld.mu.Lock()
			ld.requested = append(ld.requested, want)
			ld.mu.Unlock()
			to := want
			if to == AnyHolder || ld.override {
				to = ld.successor
			}
			if to == leaserecord.Holder(l) {
				continue
			}
			next := l.DeepCopy()
			if ld.release || ld.releaseOnly {
				next.Spec.HolderIdentity = nil
				if next, err = leases.Update(ctx, next, metav1.UpdateOptions{}); err != nil {
					t.Errorf("release: %v", err)
					return
				}
				if ld.releaseOnly {
					continue
				}
			}
			now := metav1.NewMicroTime(time.Now())
			next.Spec.HolderIdentity = ptr.To(to)
			next.Spec.AcquireTime, next.Spec.RenewTime = &now, &now
			next.Spec.LeaseTransitions = ptr.To(ptr.Deref(next.Spec.LeaseTransitions, 0) + 1)
			if ld.clear {
				delete(next.Annotations, PreferredHolderAnnotation)
			}
			if _, err := leases.Update(ctx, next, metav1.UpdateOptions{}); err != nil {
				t.Errorf("take over: %v", err)
				return
			}
		}
	}()
}

func (ld *leader) seen() []string {
	ld.mu.Lock()
	defer ld.mu.Unlock()
	return append([]string(nil), ld.requested...)
}

func heldBy(holder string) *fake.Clientset {
	return fake.NewClientset(newLease("apps", "ctrl", holder, 15, time.Now(), 4))
}

func annotation(t *testing.T, client kubernetes.Interface) (string, bool) {
	t.Helper()
	v, ok := mustLease(t, client, "apps", "ctrl").Annotations[PreferredHolderAnnotation]
	return v, ok
}

var tookRE = regexp.MustCompile(`the handoff took [0-9.]+(ms|s)( \(unheld for [0-9.]+(ms|s)\))?\n$`)

func TestYieldToCandidate(t *testing.T) {
	client := heldBy("a")
	ld := &leader{clear: true}
	ld.run(t, client, "apps", "ctrl")
	o, out, errOut := testOptions(client, "apps", nil)
	if err := execute(context.Background(), o, "yield", "ctrl", "--to", "b", "--timeout", "10s"); err != nil {
		t.Fatalf("yield: %v\n%s%s", err, out, errOut)
	}
	lines := strings.Split(out.String(), "\n")
	if len(lines) != 3 || lines[0] != "apps/ctrl: asked a to hand over to b" ||
		!strings.HasPrefix(lines[1], "apps/ctrl: b holds the Lease now; the handoff took ") || !tookRE.MatchString(out.String()) {
		t.Errorf("yield printed:\n%s", out)
	}
	if got := ld.seen(); len(got) == 0 || got[0] != "b" {
		t.Errorf("the leader saw requests %q, want b", got)
	}
	if l := mustLease(t, client, "apps", "ctrl"); leaserecord.Holder(l) != "b" || *l.Spec.LeaseTransitions != 5 {
		t.Errorf("lease %+v", l.Spec)
	}
	if v, ok := annotation(t, client); ok {
		t.Errorf("annotation left behind: %q", v)
	}
}

func TestYieldToAnyoneWithdrawsTheRequest(t *testing.T) {
	client := heldBy("a")
	// Releases, then c takes it; nobody clears the annotation, so yield
	// must, or c would be asked to hand over too.
	ld := &leader{successor: "c", release: true}
	ld.run(t, client, "apps", "ctrl")
	o, out, _ := testOptions(client, "apps", nil)
	if err := execute(context.Background(), o, "yield", "ctrl"); err != nil {
		t.Fatalf("yield: %v", err)
	}
	if !strings.HasPrefix(out.String(), "apps/ctrl: asked a to hand over to any other candidate\napps/ctrl: c holds the Lease now;") {
		t.Errorf("yield printed:\n%s", out)
	}
	if got := ld.seen(); len(got) == 0 || got[0] != AnyHolder {
		t.Errorf("the leader saw requests %q, want %q", got, AnyHolder)
	}
	if v, ok := annotation(t, client); ok {
		t.Errorf("annotation left behind: %q", v)
	}
}

func TestYieldTimesOutWhenTheHolderIgnoresIt(t *testing.T) {
	client := heldBy("a") // nobody acts on the annotation, as client-go's elector
	o, out, _ := testOptions(client, "apps", nil)
	start := time.Now()
	err := execute(context.Background(), o, "yield", "ctrl", "--to", "b", "--timeout", "300ms")
	if took := time.Since(start); took < 300*time.Millisecond || took > 5*time.Second {
		t.Errorf("yield returned after %v, want about its 300ms timeout", took)
	}
	want := "apps/ctrl: still held by a after 300ms; the handoff request was withdrawn\n" +
		"Fix: only leasehold electors hand over on request (client-go's leaderelection ignores the annotation): check that the holder runs leasehold with handoff support, and that candidate b is running and campaigning for this Lease."
	if err == nil || err.Error() != want {
		t.Errorf("err = %v\nwant %s", err, want)
	}
	if out.String() != "apps/ctrl: asked a to hand over to b\n" {
		t.Errorf("yield printed %q", out)
	}
	if v, ok := annotation(t, client); ok {
		t.Errorf("annotation left behind: %q", v)
	}
}

func TestYieldReleasedButNobodyTookIt(t *testing.T) {
	client := heldBy("a")
	ld := &leader{releaseOnly: true}
	ld.run(t, client, "apps", "ctrl")
	o, _, _ := testOptions(client, "apps", nil)
	err := execute(context.Background(), o, "yield", "ctrl", "--timeout", "300ms")
	if err == nil || !strings.Contains(err.Error(), "apps/ctrl: released by a, but nobody took it: the Lease has been unheld for ") ||
		!strings.Contains(err.Error(), " after 300ms; the handoff request was withdrawn") {
		t.Errorf("err = %v", err)
	}
}

func TestYieldReportsTheWrongSuccessor(t *testing.T) {
	client := heldBy("a")
	ld := &leader{successor: "c", override: true, clear: true}
	ld.run(t, client, "apps", "ctrl")
	o, _, _ := testOptions(client, "apps", nil)
	err := execute(context.Background(), o, "yield", "ctrl", "--to", "b", "--timeout", "10s")
	if err == nil || !strings.HasPrefix(err.Error(), "apps/ctrl: c took the Lease, not b (after ") {
		t.Errorf("err = %v", err)
	}
}

func TestYieldInterrupted(t *testing.T) {
	client := heldBy("a")
	o, _, _ := testOptions(client, "apps", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	err := execute(ctx, o, "yield", "ctrl", "--to", "b")
	if err == nil || !strings.HasPrefix(err.Error(), "apps/ctrl: interrupted after ") || !strings.HasSuffix(err.Error(), "held by a; the handoff request was withdrawn") {
		t.Errorf("err = %v", err)
	}
	if v, ok := annotation(t, client); ok {
		t.Errorf("annotation left behind: %q", v)
	}
}

func TestYieldLeavesSomeoneElsesRequest(t *testing.T) {
	l := newLease("apps", "ctrl", "a", 15, time.Now(), 0)
	l.Annotations = map[string]string{PreferredHolderAnnotation: "x"}
	client := fake.NewClientset(l)
	// While yield waits, someone else asks for z.
	go func() {
		time.Sleep(100 * time.Millisecond)
		cur := mustLease(t, client, "apps", "ctrl")
		cur.Annotations[PreferredHolderAnnotation] = "z"
		if _, err := client.CoordinationV1().Leases("apps").Update(context.Background(), cur, metav1.UpdateOptions{}); err != nil {
			t.Error(err)
		}
	}()
	o, _, errOut := testOptions(client, "apps", nil)
	err := execute(context.Background(), o, "yield", "ctrl", "--to", "b", "--timeout", "400ms")
	if err == nil || !strings.Contains(err.Error(), "still held by a") {
		t.Errorf("err = %v", err)
	}
	if errOut.String() != "warning: apps/ctrl: replacing a pending handoff request to \"x\"\n" {
		t.Errorf("stderr %q", errOut)
	}
	if v, _ := annotation(t, client); v != "z" {
		t.Errorf("annotation = %q, want z: yield removed a request that was not its own", v)
	}
}

func TestYieldRefusals(t *testing.T) {
	for _, tc := range []struct {
		name   string
		client *fake.Clientset
		args   []string
		out    string
		err    string
	}{
		{"no holder", heldBy(""), []string{"yield", "ctrl"}, "",
			"apps/ctrl has no holder: there is nothing to hand over\nFix: wait for a candidate to take it ('kubectl leasehold watch ctrl -n apps')."},
		{"already held", heldBy("a"), []string{"yield", "ctrl", "--to", "a"}, "apps/ctrl: already held by a\n", ""},
		{"star", heldBy("a"), []string{"yield", "ctrl", "--to", "*"}, "", `--to "*" is not an identity`},
		{"timeout", heldBy("a"), []string{"yield", "ctrl", "--timeout", "0s"}, "", "--timeout must be positive"},
		{"not found", heldBy("a"), []string{"yield", "other"}, "", `lease "other" not found in namespace "apps"`},
		{"no name", heldBy("a"), []string{"yield"}, "", "accepts 1 arg(s), received 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o, out, _ := testOptions(tc.client, "apps", nil)
			err := execute(context.Background(), o, tc.args...)
			if (err == nil) != (tc.err == "") || (err != nil && !strings.Contains(err.Error(), tc.err)) {
				t.Errorf("err = %v, want %q", err, tc.err)
			}
			if out.String() != tc.out {
				t.Errorf("printed %q, want %q", out, tc.out)
			}
			for _, a := range tc.client.Actions() {
				if a.GetVerb() == "patch" {
					t.Errorf("the Lease was patched: %v", a)
				}
			}
		})
	}
}

func TestYieldForbidden(t *testing.T) {
	client := heldBy("a")
	forbid(client, "patch")
	o, _, _ := testOptions(client, "apps", nil)
	err := execute(context.Background(), o, "yield", "ctrl")
	if err == nil || !strings.Contains(err.Error(), `RBAC forbids you to patch Leases in namespace "apps"`) ||
		!strings.Contains(err.Error(), "kubectl auth can-i patch leases.coordination.k8s.io -n apps") {
		t.Errorf("err = %v", err)
	}
}
