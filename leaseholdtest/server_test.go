package leaseholdtest_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/utils/ptr"

	"github.com/leasehold/leasehold/leaseholdtest"
)

func newLease(holder string) *coordinationv1.Lease {
	return &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: "l"},
		Spec:       coordinationv1.LeaseSpec{HolderIdentity: ptr.To(holder)},
	}
}

// The point of the kit: writes are compare-and-swap, unlike client-go's fake.
func TestCompareAndSwap(t *testing.T) {
	ctx := context.Background()
	srv := leaseholdtest.NewServer()
	a, b := srv.Client("a").Leases("ns"), srv.Client("b").Leases("ns")
	created, err := a.Create(ctx, newLease("a"), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Create(ctx, newLease("b"), metav1.CreateOptions{}); !apierrors.IsAlreadyExists(err) {
		t.Fatalf("second create = %v, want AlreadyExists", err)
	}
	// Both read the same version; only the first update wins.
	readB, _ := b.Get(ctx, "l", metav1.GetOptions{})
	upA := created.DeepCopy()
	upA.Spec.HolderIdentity = ptr.To("a2")
	if _, err := a.Update(ctx, upA, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	readB.Spec.HolderIdentity = ptr.To("b")
	if _, err := b.Update(ctx, readB, metav1.UpdateOptions{}); !apierrors.IsConflict(err) {
		t.Fatalf("stale update = %v, want Conflict", err)
	}
	blind := newLease("b")
	if _, err := b.Update(ctx, blind, metav1.UpdateOptions{}); !apierrors.IsBadRequest(err) {
		t.Fatalf("update without resourceVersion = %v, want BadRequest", err)
	}
	if got := *srv.Lease("ns", "l").Spec.HolderIdentity; got != "a2" {
		t.Fatalf("holder = %q, want a2", got)
	}
	if srv.Requests("b", "update") != 2 || srv.Requests("", "") != 6 {
		t.Fatalf("request counts: b updates %d, all %d", srv.Requests("b", "update"), srv.Requests("", ""))
	}
}

func TestWatchResumeSelectorAndGone(t *testing.T) {
	ctx := context.Background()
	srv := leaseholdtest.NewServer()
	c := srv.Client("c").Leases("ns")
	first, _ := c.Create(ctx, newLease("a"), metav1.CreateOptions{})
	other := newLease("x")
	other.Name = "other"
	c.Create(ctx, other, metav1.CreateOptions{})
	up := first.DeepCopy()
	up.Spec.HolderIdentity = ptr.To("b")
	second, _ := c.Update(ctx, up, metav1.UpdateOptions{})

	w, err := c.Watch(ctx, metav1.ListOptions{FieldSelector: "metadata.name=l", ResourceVersion: first.ResourceVersion})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case ev := <-w.ResultChan():
		l := ev.Object.(*coordinationv1.Lease)
		if ev.Type != watch.Modified || l.ResourceVersion != second.ResourceVersion {
			t.Fatalf("first resumed event = %v %s, want the update after %s", ev.Type, l.ResourceVersion, first.ResourceVersion)
		}
	case <-time.After(time.Second):
		t.Fatal("no event replayed")
	}
	w.Stop()

	srv.Compact()
	_, err = c.Watch(ctx, metav1.ListOptions{ResourceVersion: second.ResourceVersion})
	if !apierrors.IsResourceExpired(err) {
		t.Fatalf("watch after compaction = %v, want 410 Gone", err)
	}
}

func TestHooksInjectErrorsAndHangs(t *testing.T) {
	srv := leaseholdtest.NewServer()
	boom := errors.New("boom")
	srv.AddHook(func(ctx context.Context, r leaseholdtest.Request) error {
		switch r.Verb {
		case "get":
			return boom
		case "create":
			<-ctx.Done()
			return ctx.Err()
		}
		return nil
	})
	c := srv.Client("c").Leases("ns")
	if _, err := c.Get(context.Background(), "l", metav1.GetOptions{}); !errors.Is(err, boom) {
		t.Fatalf("get = %v, want the injected error", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := c.Create(ctx, newLease("a"), metav1.CreateOptions{}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("hung create = %v, want the caller's deadline", err)
	}
	if srv.Lease("ns", "l") != nil {
		t.Fatal("a failed create stored the lease")
	}
}

// A watch's replay is delivered whole, however long, as kube-apiserver
// sends a watch's initial events: the watch stays open, and
// ExpireWatches ends it with 410 Gone after the replay. (Found by the
// simulator's shard world: a replay of more events than the buffer held
// dropped the watch but left it registered, and ExpireWatches then sent on
// its closed channel and panicked.)
func TestLongReplayIsDeliveredWhole(t *testing.T) {
	ctx := context.Background()
	srv := leaseholdtest.NewServer()
	c := srv.Client("c").Leases("ns")
	first, err := c.Create(ctx, newLease("a"), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cur := first
	for i := range 150 {
		up := cur.DeepCopy()
		up.Spec.HolderIdentity = ptr.To(fmt.Sprint("h", i))
		if cur, err = c.Update(ctx, up, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	w, err := c.Watch(ctx, metav1.ListOptions{ResourceVersion: first.ResourceVersion})
	if err != nil {
		t.Fatal(err)
	}
	if n := srv.Watches(); n != 1 {
		t.Errorf("Watches() = %d after a replay of 150 events, want 1", n)
	}
	srv.ExpireWatches()
	var mods int
	var last watch.Event
	for ev := range w.ResultChan() {
		if ev.Type == watch.Modified {
			mods++
		}
		last = ev
	}
	if mods != 150 {
		t.Errorf("the replay delivered %d of the 150 updates, want all", mods)
	}
	if st, ok := last.Object.(*metav1.Status); last.Type != watch.Error || !ok || st.Code != 410 {
		t.Errorf("last event = %v %#v, want the ERROR event with 410 Gone", last.Type, last.Object)
	}
}
