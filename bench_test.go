package leasehold

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/go-logr/logr"
	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	coordinationv1client "k8s.io/client-go/kubernetes/typed/coordination/v1"
	"k8s.io/utils/ptr"

	"github.com/leasehold/leasehold/leaseholdtest"
)

// Micro-benchmarks of the election's hot paths: the leader's renewal and a
// follower's handling of one watch event. `make bench` runs them and puts
// the output in BENCHMARKS.md.

// benchRun builds an Elector for identity id on client and a run for it,
// without the observer goroutine: the benchmark feeds the run directly.
func benchRun(b testing.TB, id string, client coordinationv1client.LeasesGetter) *run {
	b.Helper()
	e, err := New(Config{
		Lock:      &LeaseLock{Namespace: "ns", Name: "lock", Identity: id, Client: client},
		Callbacks: Callbacks{OnStartedLeading: func(context.Context) {}},
	})
	if err != nil {
		b.Fatal(err)
	}
	r := &run{e: e, log: logr.Discard(), notifier: newLeaderNotifier(logr.Discard(), func(string) {})}
	b.Cleanup(r.notifier.close)
	return r
}

// stubLeases answers Update like a server that always accepts, with no
// storage, so that only the elector's own work is measured.
type stubLeases struct {
	coordinationv1client.LeaseInterface
	rv int
}

func (s *stubLeases) Leases(string) coordinationv1client.LeaseInterface { return s }

func (s *stubLeases) Create(_ context.Context, l *coordinationv1.Lease, _ metav1.CreateOptions) (*coordinationv1.Lease, error) {
	s.rv++
	l.ResourceVersion = strconv.Itoa(s.rv)
	return l, nil
}

func (s *stubLeases) Update(_ context.Context, l *coordinationv1.Lease, _ metav1.UpdateOptions) (*coordinationv1.Lease, error) {
	s.rv++
	l.ResourceVersion = strconv.Itoa(s.rv)
	return l, nil
}

// BenchmarkRenew measures one renewal by the leader: (*run).renew, which
// builds the Lease from its cached copy and sends one conditional Update.
// "leaseholdtest" includes the in-memory server's compare-and-swap, copy
// and watch history; "stub" is the elector's own cost only.
func BenchmarkRenew(b *testing.B) {
	for _, bc := range []struct {
		name   string
		client func() coordinationv1client.LeasesGetter
	}{
		{"leaseholdtest", func() coordinationv1client.LeasesGetter { return leaseholdtest.NewServer().Client("a") }},
		{"stub", func() coordinationv1client.LeasesGetter { return &stubLeases{} }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			r := benchRun(b, "a", bc.client())
			ctx := context.Background()
			won, err := r.acquire(ctx, actCreate)
			if err != nil || !won {
				b.Fatalf("acquire: won=%v err=%v", won, err)
			}
			lastSent := r.acquiredAt
			b.ReportAllocs()
			for b.Loop() {
				sent, err := r.renew(ctx, lastSent, time.Time{})
				if err != nil {
					b.Fatal(err)
				}
				lastSent = sent
			}
		})
	}
}

// BenchmarkObserve measures a follower's handling of one watch event (the
// leader's renewal): (*run).observe folds it into the view, then
// decideCampaign decides to keep waiting, as the campaign loop does.
func BenchmarkObserve(b *testing.B) {
	r := benchRun(b, "b", leaseholdtest.NewServer().Client("b"))
	const k = 4096
	events := make([]observation, k)
	now := time.Now()
	for i := range events {
		stamp := metav1.NewMicroTime(now.Add(time.Duration(i) * 2 * time.Second))
		events[i] = observation{lease: &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "lock", ResourceVersion: strconv.Itoa(1000 + i)},
			Spec: coordinationv1.LeaseSpec{
				HolderIdentity:       ptr.To("a"),
				LeaseDurationSeconds: ptr.To[int32](15),
				AcquireTime:          &stamp,
				RenewTime:            &stamp,
				LeaseTransitions:     ptr.To[int32](3),
			},
		}}
	}
	e := r.e
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if i == k {
			// Versions must increase for an event to count; start over
			// with an empty view (once per 4096 events).
			i, r.view = 0, leaseView{}
		}
		if err := r.observe(events[i]); err != nil {
			b.Fatal(err)
		}
		act, _ := decideCampaign(r.view, e.lock.Identity, r.foreignSelf, e.clock.Now(), e.t.leaseDuration)
		if act != actWait {
			b.Fatalf("follower decided %v on a live lease", act)
		}
		i++
	}
}
