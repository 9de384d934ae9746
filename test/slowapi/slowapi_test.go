package slowapi

import (
	"context"
	"math/rand/v2"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/go-logr/logr"
	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"
)

func init() { klog.SetLogger(logr.Discard()) }

// TestShortWorlds runs each library for 5 virtual minutes on the healthy
// and the loaded profiles and checks that the measurement is sane.
func TestShortWorlds(t *testing.T) {
	const d = 5 * time.Minute
	for _, name := range []string{"healthy", "loaded"} {
		p, _ := ProfileByName(name)
		for _, lib := range Libraries {
			t.Run(name+"/"+string(lib), func(t *testing.T) {
				res := Run(t, Config{Profile: p, Library: lib, Duration: d, Seed: 7})
				t.Logf("terms %d, lost %d, first leader at %v, leaderless %v, %.1f requests/min, overrun %v, overlaps %d, wall %v",
					res.Terms, res.TermsLost, res.FirstLeader, res.Leaderless, res.RequestsPerMinute(), res.Overrun, res.Overlaps, res.Wall)
				if res.Terms == 0 {
					t.Fatalf("no work ever started in %v", d)
				}
				if res.FirstLeader > LeaseDuration {
					t.Errorf("first leader after %v, want within LeaseDuration", res.FirstLeader)
				}
				if res.Leaderless >= d/2 {
					t.Errorf("leaderless %v of %v", res.Leaderless, d)
				}
				// At least the leader's renewals: one per RetryPeriod.
				if min := d.Minutes() * float64(time.Minute/RetryPeriod) * 0.8; float64(res.Requests) < min {
					t.Errorf("%d requests, want at least %.0f", res.Requests, min)
				}
				if len(res.Read)+len(res.Write) != res.Requests {
					t.Errorf("%d latencies drawn for %d requests", len(res.Read)+len(res.Write), res.Requests)
				}
				if res.Overrun < 0 || res.Overruns > res.TermsLost {
					t.Errorf("overrun %v in %d of %d lost terms", res.Overrun, res.Overruns, res.TermsLost)
				}
				if lib == Leasehold {
					if res.Overrun != 0 || res.Overlaps != 0 {
						t.Errorf("leasehold: overrun %v, %d overlaps; want none", res.Overrun, res.Overlaps)
					}
					if name == "healthy" {
						if r := res.RequestsPerMinute(); r < 27 || r > 33 {
							t.Errorf("leasehold, healthy: %.1f requests/min, want 30 ± 10 %%", r)
						}
					}
				}
				if len(res.RunErrors) > 0 {
					t.Errorf("elections ended unexpectedly: %v", res.RunErrors)
				}
				if res.Wall > 10*time.Second {
					t.Errorf("a %v world took %v of wall time", d, res.Wall)
				}
			})
		}
	}
}

// TestRequestHalves checks the wrapper: a request whose ctx ends before it
// lands leaves nothing, one whose ctx ends after it landed stays landed
// though its caller gets ctx.Err(), and a stall pauses both halves.
func TestRequestHalves(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := newWorld(Config{Profile: Profiles[0], Library: Leasehold, Duration: time.Hour, Seed: 1}, &Result{})
		s := w.slots[0]
		c := w.client(s, "a", 2*time.Second) // as controller-runtime's 5s, shorter
		leases := c.Leases(Namespace)
		lease := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: Namespace, Name: LeaseName},
			Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To("a")}}
		ctx := context.Background()

		// Lands after 3s: the 2s timeout ends it before, nothing is stored.
		w.override = func(bool) latency { return latency{before: 3 * time.Second, after: time.Millisecond} }
		start := time.Now()
		if _, err := leases.Create(ctx, lease, metav1.CreateOptions{}); err == nil || time.Since(start) != 2*time.Second {
			t.Fatalf("create: err %v after %v, want a timeout after 2s", err, time.Since(start))
		}
		if w.srv.Lease(Namespace, LeaseName) != nil {
			t.Fatal("a create abandoned before landing was stored")
		}
		if !s.lastOK.IsZero() {
			t.Fatal("a failed write counted as a renewal")
		}

		// Lands after 1s, answered after 4s: the caller times out, the
		// write stays.
		w.override = func(bool) latency { return latency{before: time.Second, after: 3 * time.Second} }
		start = time.Now()
		if _, err := leases.Create(ctx, lease, metav1.CreateOptions{}); err == nil || time.Since(start) != 2*time.Second {
			t.Fatalf("create: err %v after %v, want a timeout after 2s", err, time.Since(start))
		}
		if got := w.srv.Lease(Namespace, LeaseName); got == nil || holderOf(got) != "a" {
			t.Fatalf("a create that landed before its answer was lost is not stored: %v", got)
		}
		if !s.lastOK.IsZero() {
			t.Fatal("a write whose answer was lost counted as a renewal")
		}

		// Answered in time: a renewal, counted from its send time.
		w.override = func(bool) latency { return latency{before: 100 * time.Millisecond, after: 200 * time.Millisecond} }
		sent := time.Now()
		if _, err := leases.Create(ctx, lease, metav1.CreateOptions{}); !apierrors.IsAlreadyExists(err) {
			t.Fatalf("second create: %v, want AlreadyExists", err)
		}
		got, err := leases.Get(ctx, LeaseName, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		sent = time.Now()
		if _, err := leases.Update(ctx, got, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		if !s.lastOK.Equal(sent) {
			t.Fatalf("renewal recorded as sent at %v, want %v", s.lastOK.Sub(w.start), sent.Sub(w.start))
		}

		// A stall from 10s to 20s: a request sent at 9s needing 2s
		// lands at 21s; sent inside the stall, it starts at its end.
		w.stalls = stalls{{10 * time.Second, 20 * time.Second}}
		if at := w.stalls.advance(9*time.Second, 2*time.Second); at != 21*time.Second {
			t.Errorf("advance(9s, 2s) = %v, want 21s", at)
		}
		if at := w.stalls.advance(12*time.Second, time.Second); at != 21*time.Second {
			t.Errorf("advance(12s, 1s) = %v, want 21s", at)
		}
		if at := w.stalls.advance(21*time.Second, time.Second); at != 22*time.Second {
			t.Errorf("advance(21s, 1s) = %v, want 22s", at)
		}
		if at := w.stalls.advance(12*time.Second, 0); at != 20*time.Second {
			t.Errorf("advance(12s, 0) = %v, want 20s", at)
		}
	})
}

// TestProfiles checks that the drawn latencies have the documented
// quantiles, and the stall schedule its spacing.
func TestProfiles(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, p := range Profiles {
		for _, write := range []bool{false, true} {
			d := p.Read
			if write {
				d = p.Write
			}
			var s []time.Duration
			for range 50000 {
				s = append(s, p.draw(r, write).total())
			}
			if got := quantile(s, 0.5); got < d.Median*9/10 || got > d.Median*11/10 {
				t.Errorf("%s (write %v): p50 %v, want %v ± 10%%", p.Name, write, got, d.Median)
			}
			if p.WriteStallProb > 0 && write {
				continue // the stalls are the p99
			}
			if got := quantile(s, 0.99); got < d.P99*8/10 || got > d.P99*12/10 {
				t.Errorf("%s (write %v): p99 %v, want %v ± 20%%", p.Name, write, got, d.P99)
			}
		}
	}
	p, _ := ProfileByName("brownout")
	st := p.schedule(r, time.Hour)
	if len(st) < 12 || len(st) > 20 {
		t.Errorf("brownout: %d stalls in an hour, want 12–20", len(st))
	}
	prev := time.Duration(0)
	for _, w := range st {
		if gap := w.start - prev; gap < p.StallEveryMin || gap > p.StallEveryMax {
			t.Errorf("brownout: stall at %v, %v after the previous start", w.start, gap)
		}
		if l := w.end - w.start; l < p.StallMin || l > p.StallMax {
			t.Errorf("brownout: stall of %v", l)
		}
		prev = w.start
	}
}

func TestReplaceSection(t *testing.T) {
	block := BeginMarker + "\nnew\n" + EndMarker + "\n"
	for _, c := range []struct{ doc, want string }{
		{"", block},
		{"# B\n\ntext\n", "# B\n\ntext\n\n" + block},
		{"# B\n" + BeginMarker + "\nold\nold\n" + EndMarker + "\ntail\n", "# B\n" + block + "tail\n"},
	} {
		if got := ReplaceSection(c.doc, "new\n"); got != c.want {
			t.Errorf("ReplaceSection(%q) = %q, want %q", c.doc, got, c.want)
		}
	}
	rep := &Report{Seed: 1, Duration: time.Hour}
	if md := rep.Markdown(); !strings.HasPrefix(md, Heading+"\n") {
		t.Errorf("Markdown does not start with %q", Heading)
	}
}
