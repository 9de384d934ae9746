package plugin

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/utils/ptr"

	"github.com/leasehold/leasehold/internal/leaserecord"
)

// scriptedWatches makes the fake clientset's Lease watches return the
// given results in order, then the tracker's own watch. It records the
// resourceVersion each watch asked for.
type scriptedWatches struct {
	mu      sync.Mutex
	results []func() (watch.Interface, error)
	rvs     []string
}

func (s *scriptedWatches) install(client *fake.Clientset) {
	client.PrependWatchReactor("leases", func(a k8stesting.Action) (bool, watch.Interface, error) {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.rvs = append(s.rvs, a.(k8stesting.WatchAction).GetWatchRestrictions().ResourceVersion)
		if len(s.results) == 0 {
			return false, nil, nil
		}
		next := s.results[0]
		s.results = s.results[1:]
		w, err := next()
		return true, w, err
	})
}

func (s *scriptedWatches) resourceVersions() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.rvs...)
}

type seen struct {
	typ    watch.EventType
	holder string
	rv     string
}

// follow runs followLease in the background and returns what it delivered
// so far and its result.
func follow(ctx context.Context, client *fake.Clientset, rv string) (func() []seen, <-chan error) {
	var mu sync.Mutex
	var got []seen
	done := make(chan error, 1)
	go func() {
		done <- followLease(ctx, client, "apps", "ctrl", rv, func(typ watch.EventType, l *coordinationv1.Lease) (bool, error) {
			mu.Lock()
			defer mu.Unlock()
			got = append(got, seen{typ, leaserecord.Holder(l), l.ResourceVersion})
			return false, nil
		})
	}()
	return func() []seen {
		mu.Lock()
		defer mu.Unlock()
		return append([]seen(nil), got...)
	}, done
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func withRV(l *coordinationv1.Lease, rv string) *coordinationv1.Lease {
	l = l.DeepCopy()
	l.ResourceVersion = rv
	return l
}

func TestFollowReopensAClosedWatchFromTheLastVersion(t *testing.T) {
	base := newLease("apps", "ctrl", "a", 15, time.Now(), 0)
	client := fake.NewClientset(base)
	w1 := watch.NewFake()
	s := &scriptedWatches{results: []func() (watch.Interface, error){func() (watch.Interface, error) { return w1, nil }}}
	s.install(client)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got, done := follow(ctx, client, "5")

	w1.Modify(withRV(base, "5")) // already seen: not delivered
	w1.Modify(withRV(base, "7"))
	other := withRV(base, "8")
	other.Name = "other"
	w1.Modify(other) // another Lease: not delivered, but its version is the stream's newest
	w1.Stop()        // the server closes the watch
	eventually(t, "a second watch", func() bool { return len(s.resourceVersions()) == 2 })
	// resourceVersions are one sequence for the whole store: the watch
	// resumes from the newest it carried (internal/watchloop).
	if rvs := s.resourceVersions(); rvs[0] != "5" || rvs[1] != "8" {
		t.Errorf("watches asked for resourceVersions %q, want [5 8]", rvs)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("followLease returned %v, want context.Canceled", err)
	}
	if g := got(); len(g) != 1 || g[0] != (seen{watch.Modified, "a", "7"}) {
		t.Errorf("delivered %+v", g)
	}
}

func TestFollowRelistsAfterAnExpiredWatch(t *testing.T) {
	base := newLease("apps", "ctrl", "a", 15, time.Now(), 0)
	client := fake.NewClientset(withRV(base, "9"))
	w1 := watch.NewFake()
	s := &scriptedWatches{results: []func() (watch.Interface, error){
		func() (watch.Interface, error) { return w1, nil },
		// The re-list's watch is rejected once more as too old.
		func() (watch.Interface, error) {
			return nil, apierrors.NewResourceExpired("too old resource version")
		},
	}}
	s.install(client)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got, done := follow(ctx, client, "5")

	gone := apierrors.NewResourceExpired("too old resource version: 5 (9)").ErrStatus
	w1.Error(&gone)
	// Re-listed twice, then the tracker's watch: changes reach us again.
	eventually(t, "the third watch", func() bool { return len(s.resourceVersions()) == 3 })
	time.Sleep(20 * time.Millisecond)
	l := mustLease(t, client, "apps", "ctrl")
	l.Spec.HolderIdentity = ptr.To("b")
	l.ResourceVersion = "10"
	if _, err := client.CoordinationV1().Leases("apps").Update(ctx, l, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "b delivered", func() bool { return len(got()) > 0 && got()[len(got())-1].holder == "b" })
	cancel()
	<-done
	// The first re-list delivers version 9 (changed while we were not
	// watching), the second finds nothing new.
	want := []seen{{watch.Modified, "a", "9"}, {watch.Modified, "b", "10"}}
	if g := got(); len(g) != 2 || g[0] != want[0] || g[1] != want[1] {
		t.Errorf("delivered %+v, want %+v", g, want)
	}
	if n := countVerb(client, "list"); n != 2 {
		t.Errorf("%d lists, want 2 (one per expired watch)", n)
	}
}

func TestFollowReportsADeletionFoundByARelist(t *testing.T) {
	base := newLease("apps", "ctrl", "a", 15, time.Now(), 0)
	client := fake.NewClientset()
	w1 := watch.NewFake()
	s := &scriptedWatches{results: []func() (watch.Interface, error){func() (watch.Interface, error) { return w1, nil }}}
	s.install(client)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got, done := follow(ctx, client, "5")
	w1.Modify(withRV(base, "6"))
	eventually(t, "version 6", func() bool { return len(got()) == 1 })
	gone := apierrors.NewGone("gone").ErrStatus
	w1.Error(&gone)
	eventually(t, "the deletion", func() bool { return len(got()) == 2 })
	cancel()
	<-done
	if g := got(); g[1] != (seen{watch.Deleted, "a", "6"}) {
		t.Errorf("delivered %+v, want the deletion of version 6", g)
	}
}

func TestFollowRetriesTransientErrorsButNotRBAC(t *testing.T) {
	client := fake.NewClientset(newLease("apps", "ctrl", "a", 15, time.Now(), 0))
	s := &scriptedWatches{results: []func() (watch.Interface, error){
		func() (watch.Interface, error) { return nil, errors.New("connection reset by peer") },
		func() (watch.Interface, error) { return nil, errors.New("connection reset by peer") },
		func() (watch.Interface, error) {
			return nil, apierrors.NewForbidden(schema.GroupResource{Group: "coordination.k8s.io", Resource: "leases"}, "", errors.New("no"))
		},
	}}
	s.install(client)
	start := time.Now()
	_, done := follow(context.Background(), client, "5")
	select {
	case err := <-done:
		if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "RBAC forbids you to watch Leases") {
			t.Errorf("err = %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("followLease did not give up on a forbidden watch")
	}
	if took := time.Since(start); took < 300*time.Millisecond {
		t.Errorf("two retries took %v, want backoff of 100ms then 200ms", took)
	}
	if n := len(s.resourceVersions()); n != 3 {
		t.Errorf("%d watches, want 3", n)
	}
}

func TestFollowStopsWhenDone(t *testing.T) {
	client := fake.NewClientset(newLease("apps", "ctrl", "a", 15, time.Now(), 0))
	w1 := watch.NewFake()
	s := &scriptedWatches{results: []func() (watch.Interface, error){func() (watch.Interface, error) { return w1, nil }}}
	s.install(client)
	done := make(chan error, 1)
	wantErr := errors.New("stop here")
	go func() {
		done <- followLease(context.Background(), client, "apps", "ctrl", "1", func(watch.EventType, *coordinationv1.Lease) (bool, error) {
			return false, wantErr
		})
	}()
	w1.Modify(withRV(newLease("apps", "ctrl", "b", 15, time.Now(), 1), "2"))
	if err := <-done; !errors.Is(err, wantErr) {
		t.Errorf("err = %v, want fn's error", err)
	}
}

func countVerb(client *fake.Clientset, verb string) int {
	n := 0
	for _, a := range client.Actions() {
		if a.GetVerb() == verb {
			n++
		}
	}
	return n
}

var _ runtime.Object = (*coordinationv1.Lease)(nil)
