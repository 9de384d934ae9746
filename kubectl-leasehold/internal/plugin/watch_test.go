package plugin

import (
	"context"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/utils/ptr"
)

// stepClock is a clock the test moves.
type stepClock struct{ t time.Time }

func (c *stepClock) now() time.Time           { return c.t }
func (c *stepClock) step(d time.Duration)     { c.t = c.t.Add(d) }
func (c *stepClock) micro() *metav1.MicroTime { m := metav1.NewMicroTime(c.t); return &m }

func TestTimeline(t *testing.T) {
	clk := &stepClock{t: t0}
	out := &syncBuffer{}
	tl := &timeline{w: out, now: clk.now}

	l := newLease("apps", "ctrl", "a", 15, t0.Add(-1200*time.Millisecond), 3)
	tl.start(l)
	if d := tl.untilExpiry(); d != 15*time.Second {
		t.Errorf("untilExpiry = %v, want 15s from the first sight", d)
	}
	next := func(d time.Duration, typ watch.EventType, change func(l *coordinationv1.Lease)) {
		clk.step(d)
		l = l.DeepCopy()
		change(l)
		tl.change(typ, l)
	}
	next(2*time.Second, watch.Modified, func(l *coordinationv1.Lease) { l.Spec.RenewTime = clk.micro() })
	next(time.Second, watch.Modified, func(l *coordinationv1.Lease) {
		l.Annotations = map[string]string{PreferredHolderAnnotation: "b"}
	})
	next(10*time.Millisecond, watch.Modified, func(l *coordinationv1.Lease) {}) // nothing we show changed
	next(10*time.Millisecond, watch.Modified, func(l *coordinationv1.Lease) { l.Spec.HolderIdentity = nil })
	if d := tl.untilExpiry(); d != -1 {
		t.Errorf("untilExpiry = %v while released, want -1", d)
	}
	next(15*time.Millisecond, watch.Modified, func(l *coordinationv1.Lease) {
		l.Spec.HolderIdentity, l.Spec.LeaseTransitions, l.Spec.RenewTime = ptr.To("b"), ptr.To[int32](4), clk.micro()
		delete(l.Annotations, PreferredHolderAnnotation)
	})
	next(2*time.Second, watch.Modified, func(l *coordinationv1.Lease) {
		l.Spec.HolderIdentity, l.Spec.LeaseTransitions, l.Spec.RenewTime = ptr.To("c"), ptr.To[int32](5), clk.micro()
		l.Annotations[PreferredHolderAnnotation] = AnyHolder
		l.Spec.PreferredHolder = ptr.To("d")
		l.Spec.LeaseDurationSeconds = ptr.To[int32](10)
	})
	if d := tl.untilExpiry(); d != 10*time.Second {
		t.Errorf("untilExpiry = %v, want 10s after the takeover", d)
	}
	clk.step(10 * time.Second)
	if d := tl.untilExpiry(); d != 0 {
		t.Errorf("untilExpiry = %v, want 0", d)
	}
	tl.expired()
	if d := tl.untilExpiry(); d != -1 {
		t.Errorf("untilExpiry = %v after reporting the expiry, want -1", d)
	}
	next(time.Second, watch.Deleted, func(l *coordinationv1.Lease) {})
	if d := tl.untilExpiry(); d != -1 {
		t.Errorf("untilExpiry = %v when deleted, want -1", d)
	}
	next(time.Second, watch.Added, func(l *coordinationv1.Lease) { l.Spec.HolderIdentity = ptr.To("e") })

	want := `
10:00:00.000  apps/ctrl held by a (renewed 1.2s ago, duration 15s, 3 transitions)
10:00:02.000  renewed by a (+2.0s)
10:00:03.000  handoff requested: a should hand over to b
10:00:03.020  released by a
10:00:03.035  b acquired the Lease (transition 4; it was free for 15ms)
10:00:03.035  handoff request cleared
10:00:05.035  c took over from b (transition 5; 2.0s after b's last renewal seen here)
10:00:05.035  handoff requested: c should hand over to any other candidate
10:00:05.035  spec.preferredHolder: <none> -> d
10:00:05.035  lease duration 15s -> 10s
10:00:15.035  no renewal seen for 10s: c's claim has run out; a candidate may take over
10:00:16.035  Lease deleted (last holder: c)
10:00:17.035  Lease created, held by e
`
	if got := out.String(); got != strings.TrimPrefix(want, "\n") {
		t.Errorf("timeline:\n%s\nwant:\n%s", got, want)
	}
}

func TestTimelineStartStates(t *testing.T) {
	clk := &stepClock{t: t0}
	for _, tc := range []struct {
		lease *coordinationv1.Lease
		want  string
	}{
		{newLease("ns", "free", "", 15, t0.Add(-time.Minute), 2), "10:00:00.000  ns/free not held (renewed 1m0s ago, duration 15s, 2 transitions)\n"},
		{func() *coordinationv1.Lease {
			l := newLease("ns", "moving", "a", 15, t0.Add(-20*time.Second), 0)
			l.Annotations = map[string]string{PreferredHolderAnnotation: "b"}
			return l
		}(), "10:00:00.000  ns/moving held by a (renewed 20s ago (expired), duration 15s, 0 transitions, handoff requested to b)\n"},
	} {
		out := &syncBuffer{}
		(&timeline{w: out, now: clk.now}).start(tc.lease)
		if out.String() != tc.want {
			t.Errorf("got  %q\nwant %q", out, tc.want)
		}
	}
}

// waitFor waits until out contains s.
func waitFor(t *testing.T, out *syncBuffer, s string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !strings.Contains(out.String(), s) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q within %v; printed:\n%s", s, within, out)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestWatchCommand(t *testing.T) {
	client := fake.NewClientset(newLease("apps", "ctrl", "a", 1, time.Now(), 0), newLease("apps", "other", "x", 1, time.Now(), 0))
	leases := client.CoordinationV1().Leases("apps")
	o, out, _ := testOptions(client, "apps", nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- execute(ctx, o, "watch", "ctrl") }()
	waitFor(t, out, "apps/ctrl held by a", 5*time.Second)
	time.Sleep(50 * time.Millisecond) // let the watch open

	update := func(name string, change func(l *coordinationv1.Lease)) {
		t.Helper()
		l := mustLease(t, client, "apps", name)
		change(l)
		if _, err := leases.Update(ctx, l, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	update("other", func(l *coordinationv1.Lease) { l.Spec.HolderIdentity = ptr.To("y") })
	update("ctrl", func(l *coordinationv1.Lease) { l.Spec.RenewTime = &metav1.MicroTime{Time: time.Now()} })
	waitFor(t, out, "renewed by a (+", 5*time.Second)
	update("ctrl", func(l *coordinationv1.Lease) {
		l.Spec.HolderIdentity, l.Spec.LeaseTransitions = ptr.To("b"), ptr.To[int32](1)
	})
	waitFor(t, out, "b took over from a (transition 1;", 5*time.Second)
	// No renewal for the 1s lease duration: the timeline says so.
	waitFor(t, out, "no renewal seen for 1s: b's claim has run out", 5*time.Second)
	if err := leases.Delete(ctx, "ctrl", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, out, "Lease deleted (last holder: b)", 5*time.Second)

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("watch returned %v after Ctrl-C, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("watch did not stop within 5s of its ctx being cancelled")
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if !strings.HasSuffix(lines[len(lines)-1], "  stopped") {
		t.Errorf("the last line should say stopped:\n%s", out)
	}
	if strings.Contains(out.String(), " y") || strings.Contains(out.String(), "x ") {
		t.Errorf("another Lease's changes were shown:\n%s", out)
	}
	if len(lines) != 6 {
		t.Errorf("want 6 lines (start, renewal, takeover, expiry, deletion, stopped):\n%s", out)
	}
}

func TestWatchNotFound(t *testing.T) {
	o, _, _ := testOptions(fake.NewClientset(), "apps", nil)
	err := execute(context.Background(), o, "watch", "ctrl")
	if err == nil || !strings.Contains(err.Error(), `lease "ctrl" not found in namespace "apps"`) {
		t.Errorf("err = %v", err)
	}
}
