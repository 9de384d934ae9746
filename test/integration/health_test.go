package integration

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/klog/v2"

	"github.com/leasehold/leasehold"
	"github.com/leasehold/leasehold/test/testkit"
)

// healthElector is an elector with Rejoin whose API requests can be made
// to fail, with its HealthHandler served over HTTP.
type healthElector struct {
	id     string
	el     *leasehold.Elector
	rec    *testkit.Wire
	srv    *httptest.Server
	broken atomic.Bool
	*testkit.Background
}

func startHealthElector(t *testing.T, id, ns, name string, tolerance time.Duration, logs *testkit.Logs) *healthElector {
	t.Helper()
	h := &healthElector{id: id, rec: &testkit.Wire{}}
	// While broken, every request is answered 503 without reaching the
	// API server, as when it is down behind a load balancer.
	h.rec.SetBefore(func(c testkit.Call, req *http.Request) *http.Response {
		if !h.broken.Load() {
			return nil
		}
		return &http.Response{
			StatusCode: http.StatusServiceUnavailable,
			Status:     "503 Service Unavailable",
			Header:     http.Header{"Content-Type": []string{"text/plain"}},
			Body:       io.NopCloser(strings.NewReader("unavailable")),
			Request:    req,
			Proto:      "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		}
	})
	cs := clientFor(cp.Config(), std.D, h.rec)
	el, err := leasehold.New(leasehold.Config{
		Lock:            &leasehold.LeaseLock{Namespace: ns, Name: name, Identity: id, Client: cs.CoordinationV1()},
		LeaseDuration:   std.L,
		RenewDeadline:   std.D,
		RetryPeriod:     std.P,
		ReleaseOnCancel: true,
		Rejoin:          true,
		Callbacks: leasehold.Callbacks{
			OnStartedLeading: func(ctx context.Context) { <-ctx.Done() },
		},
	})
	testkit.Must(t, err)
	h.el = el
	h.srv = httptest.NewServer(el.HealthHandler(tolerance))
	// Cleanups run last first: the server closes once Run has returned.
	t.Cleanup(h.srv.Close)
	h.Background = testkit.Go(t, klog.NewContext(context.Background(), logs.Logger(id)), id, 15*time.Second, el.Run)
	return h
}

// probe GETs the health endpoint like a kubelet liveness probe.
func (h *healthElector) probe(t *testing.T) (int, string) {
	t.Helper()
	resp, err := http.Get(h.srv.URL)
	if err != nil {
		t.Fatalf("%s: health probe: %v", h.id, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(body))
}

func (h *healthElector) wantOK(t *testing.T, when string) {
	t.Helper()
	if code, body := h.probe(t); code != http.StatusOK || body != "ok" {
		t.Errorf("%s %s: health %d %q, want 200 ok", h.id, when, code, body)
	}
}

// TestHealth serves HealthHandler for a leader and a follower on the real
// API server: 200 while following and while leading; when every request
// of the leader fails, still 200 until LeaseDuration+tolerance has passed
// (the leader steps down in time, so no other check fails), then 500 with
// ErrAPIUnreachable; and 200 again once the API server answers.
func TestHealth(t *testing.T) {
	ns, name := newNamespace(t), "health"
	tolerance := std.P
	logs := testkit.NewLogs(t, 4)

	a := startHealthElector(t, "a", ns, name, tolerance, logs)
	testkit.Eventually(t, 10*time.Second, "a to lead", a.el.IsLeader)
	b := startHealthElector(t, "b", ns, name, tolerance, logs)
	testkit.Eventually(t, 5*time.Second, "b to follow a", func() bool { return b.el.Leader() == "a" })
	// A few renewals and a while of following.
	deadline := time.Now().Add(3 * std.P)
	for time.Now().Before(deadline) {
		a.wantOK(t, "leading")
		b.wantOK(t, "following")
		time.Sleep(50 * time.Millisecond)
	}
	if !a.el.IsLeader() || b.el.IsLeader() {
		t.Fatalf("leadership changed: a leads %v, b leads %v", a.el.IsLeader(), b.el.IsLeader())
	}

	// Cut a off from the API server.
	broke := time.Now()
	a.broken.Store(true)
	a.rec.CutWatches()
	type sample struct {
		at   time.Duration
		code int
		body string
	}
	var samples []sample
	var first500 *sample
	limit := std.L + tolerance + 5*time.Second
	for first500 == nil {
		if time.Since(broke) > limit {
			t.Fatalf("a's health still 200 %v after every request started failing (want 500 after LeaseDuration+tolerance = %v)", limit, std.L+tolerance)
		}
		code, body := a.probe(t)
		s := sample{at: time.Since(broke), code: code, body: body}
		samples = append(samples, s)
		if code != http.StatusOK {
			first500 = &samples[len(samples)-1]
		}
		time.Sleep(20 * time.Millisecond)
	}
	if first500.code != http.StatusInternalServerError || !strings.Contains(first500.body, leasehold.ErrAPIUnreachable.Error()) {
		t.Fatalf("a's health %d %q at %v; want 500 with %q", first500.code, first500.body, first500.at, leasehold.ErrAPIUnreachable)
	}
	// The failures began at the earliest when the transport broke, so a
	// 500 before LeaseDuration+tolerance would be early.
	if first500.at < std.L+tolerance {
		t.Errorf("a's health turned 500 %v after the API became unreachable, before LeaseDuration+tolerance (%v)", first500.at, std.L+tolerance)
	}
	if a.el.IsLeader() {
		t.Error("a still believes it leads after LeaseDuration with every request failing")
	}
	// Meanwhile b took over and is healthy as leader.
	testkit.Eventually(t, 2*std.L, "b to take over", b.el.IsLeader)
	b.wantOK(t, "leading after the takeover")
	// 500 is stable while the outage lasts.
	for range 5 {
		if code, body := a.probe(t); code != http.StatusInternalServerError || !strings.Contains(body, leasehold.ErrAPIUnreachable.Error()) {
			t.Errorf("a during the outage: health %d %q, want 500 with ErrAPIUnreachable", code, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if failed := a.rec.Count("update", broke, func(c testkit.Call) bool { return c.Status == http.StatusServiceUnavailable }) +
		a.rec.Count("get", broke, func(c testkit.Call) bool { return c.Status == http.StatusServiceUnavailable }) +
		a.rec.Count("watch", broke, func(c testkit.Call) bool { return c.Status == http.StatusServiceUnavailable }); failed == 0 {
		t.Error("a made no request during the outage")
	}

	// Heal: a's next request succeeds and it is healthy again, following b.
	healed := time.Now()
	a.broken.Store(false)
	testkit.Eventually(t, 3*std.L, "a's health to recover", func() bool { code, _ := a.probe(t); return code == http.StatusOK })
	recovered := time.Since(healed)
	testkit.Eventually(t, 3*std.L, "a to follow b", func() bool { return a.el.Leader() == "b" })
	a.wantOK(t, "following after the outage")
	b.wantOK(t, "leading")
	if a.el.IsLeader() {
		t.Error("a leads after the outage; b should")
	}
	n200 := 0
	for _, s := range samples {
		if s.code == http.StatusOK {
			n200++
		}
	}
	t.Logf("outage: %d probes 200 for %v, then 500 at %v (LeaseDuration+tolerance %v): %q; healthy again %v after healing",
		n200, samples[len(samples)-1].at.Round(time.Millisecond), first500.at.Round(time.Millisecond), std.L+tolerance,
		first500.body, recovered.Round(time.Millisecond))
}
