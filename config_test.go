package leasehold

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/rest"

	"github.com/leasehold/leasehold/leaseholdtest"
)

func validConfig() Config {
	return Config{
		Lock:      &LeaseLock{Namespace: "ns", Name: "lock", Identity: "a", Client: leaseholdtest.NewServer().Client("a")},
		Callbacks: Callbacks{OnStartedLeading: func(context.Context) {}},
	}
}

// Contract 1: New returns a nil Elector and one error that names every
// problem (field, value, rule, fix).
func TestNewValidation(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(*Config)
		want   []string // each must appear in the error
	}{
		{"nil lock", func(c *Config) { c.Lock = nil }, []string{"Lock is nil", "set Config.Lock"}},
		{"nil client", func(c *Config) { c.Lock.Client = nil }, []string{"Lock.Client is nil", "CoordinationV1()"}},
		{"empty namespace", func(c *Config) { c.Lock.Namespace = "" }, []string{`Lock.Namespace is ""`}},
		{"empty name", func(c *Config) { c.Lock.Name = "" }, []string{`Lock.Name is ""`}},
		{"empty identity", func(c *Config) { c.Lock.Identity = "" }, []string{`Lock.Identity is ""`, "DefaultIdentity"}},
		{"nil OnStartedLeading", func(c *Config) { c.Callbacks.OnStartedLeading = nil }, []string{"OnStartedLeading is nil"}},
		{"negative lease", func(c *Config) { c.LeaseDuration = -time.Second }, []string{"LeaseDuration is -1s", "must not be negative"}},
		{"negative renew", func(c *Config) { c.RenewDeadline = -1 }, []string{"RenewDeadline is -1ns"}},
		{"negative retry", func(c *Config) { c.RetryPeriod = -time.Minute }, []string{"RetryPeriod is -1m0s"}},
		{"invalid lease name", func(c *Config) { c.Lock.Name = "My_Lease" }, []string{`Lock.Name is "My_Lease"`, "DNS subdomain", `e.g. "my-lease"`}},
		{"invalid namespace", func(c *Config) { c.Lock.Namespace = "Kube System" }, []string{`Lock.Namespace is "Kube System"`, "DNS label", `e.g. "kube-system"`}},
		{"whitespace identity", func(c *Config) { c.Lock.Identity = "  " }, []string{`Lock.Identity is "  ", only whitespace`}},
		{"padded identity", func(c *Config) { c.Lock.Identity = " pod-a\n" }, []string{"leading or trailing whitespace", `("pod-a")`}},
		{"negative step-down timeout", func(c *Config) { c.StepDownTimeout = -time.Second }, []string{"StepDownTimeout is -1s"}},
		{"sub-second lease", func(c *Config) {
			c.LeaseDuration, c.RenewDeadline, c.RetryPeriod = 800*time.Millisecond, 300*time.Millisecond, 100*time.Millisecond
		}, []string{"LeaseDuration is 800ms", "at least 1s"}},
		{"fractional lease", func(c *Config) { c.LeaseDuration = 15500 * time.Millisecond }, []string{"LeaseDuration is 15.5s", "whole seconds", "use 15s or 16s"}},
		{"renew deadline too close to retry", func(c *Config) { c.RenewDeadline, c.RetryPeriod = 2400*time.Millisecond, 2*time.Second }, []string{"RenewDeadline is 2.4s", "1.2 x RetryPeriod"}},
		{"no safety margin (client-go accepts 11s/10s/2s)", func(c *Config) {
			c.LeaseDuration, c.RenewDeadline, c.RetryPeriod = 11*time.Second, 10*time.Second, 2*time.Second
		}, []string{"LeaseDuration is 11s", "RenewDeadline + RetryPeriod", "at least 13s"}},
		{"margin exactly zero", func(c *Config) {
			c.LeaseDuration, c.RenewDeadline, c.RetryPeriod = 12*time.Second, 10*time.Second, 2*time.Second
		}, []string{"LeaseDuration is 12s"}},
		{"everything at once", func(c *Config) {
			c.Lock.Namespace, c.Lock.Identity, c.Callbacks.OnStartedLeading = "", "", nil
			c.LeaseDuration = 11 * time.Second
		}, []string{"Lock.Namespace", "Lock.Identity", "OnStartedLeading", "LeaseDuration is 11s"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := validConfig()
			tc.mutate(&cfg)
			e, err := New(cfg)
			if e != nil {
				t.Fatal("New returned an Elector for a bad config")
			}
			if !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("err = %v, want ErrInvalidConfig", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

// Contract 1: zero durations take the defaults; a valid config is accepted.
func TestNewDefaults(t *testing.T) {
	e, err := New(validConfig())
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if e.t.leaseDuration != 15*time.Second || e.t.renewDeadline != 10*time.Second || e.t.retryPeriod != 2*time.Second {
		t.Fatalf("timings = %+v, want 15s/10s/2s", e.t)
	}
	if e.cfg.Name != "ns/lock" {
		t.Fatalf("Name = %q, want ns/lock", e.cfg.Name)
	}
	if e.t.safetyMargin() != 3*time.Second {
		t.Fatalf("safety margin = %v, want 3s", e.t.safetyMargin())
	}
	if e.cfg.StepDownTimeout != 20*time.Second || e.cfg.StepDownTimeout >= 30*time.Second {
		t.Fatalf("StepDownTimeout = %v, want 20s, below the kubelet's default 30s grace period", e.cfg.StepDownTimeout)
	}
	if e.t.requestTimeout() != RequestTimeout(e.cfg.RenewDeadline) {
		t.Fatalf("the elector's request timeout %v differs from RequestTimeout's %v", e.t.requestTimeout(), RequestTimeout(e.cfg.RenewDeadline))
	}
}

func TestRequestTimeout(t *testing.T) {
	for _, tc := range []struct{ rd, want time.Duration }{
		{0, 5 * time.Second},
		{10 * time.Second, 5 * time.Second},
		{1500 * time.Millisecond, time.Second},
	} {
		if got := RequestTimeout(tc.rd); got != tc.want {
			t.Errorf("RequestTimeout(%v) = %v, want %v", tc.rd, got, tc.want)
		}
	}
}

func TestDefaultIdentityUnique(t *testing.T) {
	a, err1 := DefaultIdentity()
	b, err2 := DefaultIdentity()
	if err1 != nil || err2 != nil || a == b || !strings.Contains(a, "_") {
		t.Fatalf("DefaultIdentity = %q, %q (%v, %v): want two distinct hostname_random values", a, b, err1, err2)
	}
}

// WithRequestTimeout bounds ordinary requests but never cuts a watch.
func TestWithRequestTimeoutSparesWatches(t *testing.T) {
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(1500 * time.Millisecond):
			w.Write([]byte("done"))
		case <-r.Context().Done():
		}
	}))
	defer slow.Close()
	cfg := WithRequestTimeout(&rest.Config{Host: slow.URL}, 2*time.Second) // timeout 1s
	rt, err := rest.TransportFor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Transport: rt}
	if _, err := client.Get(slow.URL + "/apis/coordination.k8s.io/v1/namespaces/ns/leases/x"); err == nil {
		t.Fatal("a 1.5s GET passed a 1s request timeout")
	}
	resp, err := client.Get(slow.URL + "/apis/coordination.k8s.io/v1/namespaces/ns/leases?watch=true")
	if err != nil {
		t.Fatalf("watch cut by the request timeout: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "done" {
		t.Fatalf("watch body = %q", body)
	}
}
