package shard

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	coordinationv1client "k8s.io/client-go/kubernetes/typed/coordination/v1"

	"github.com/leasehold/leasehold/leaseholdtest"
)

var leasesResource = schema.GroupResource{Group: "coordination.k8s.io", Resource: "leases"}

// counter counts the requests of one client, verb and Lease name, from
// when it is made.
func counter(h *harness, client, verb, name string) func() int {
	var mu sync.Mutex
	n := 0
	h.srv.AddHook(func(ctx context.Context, r leaseholdtest.Request) error {
		if r.Client == client && r.Verb == verb && r.Name == name {
			mu.Lock()
			n++
			mu.Unlock()
		}
		return nil
	})
	return func() int {
		mu.Lock()
		defer mu.Unlock()
		return n
	}
}

// A permanent refusal ends Run with ErrRefused at the first answer: no
// retry could succeed. The error names the request, the fix for RBAC, and
// wraps the server's error.
func TestPermanentRefusalEndsRun(t *testing.T) {
	cases := []struct {
		name, verb, lease string
		err               error
		want              []string
	}{
		{"create assignment forbidden", "create", testGroup,
			apierrors.NewForbidden(leasesResource, testGroup, errors.New("RBAC: no create")), []string{"write assignment", "grant get, list, watch, create, update and delete"}},
		{"list forbidden", "list", "",
			apierrors.NewForbidden(leasesResource, "", errors.New("RBAC: no list")), []string{"list the Leases of group grp", "grant get, list, watch, create, update and delete"}},
		{"create assignment invalid", "create", testGroup,
			apierrors.NewInvalid(schema.GroupKind{Group: "coordination.k8s.io", Kind: "Lease"}, testGroup, nil), []string{"write assignment"}},
		{"create assignment in a missing namespace", "create", testGroup,
			apierrors.NewNotFound(schema.GroupResource{Resource: "namespaces"}, testNS), []string{"write assignment"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			inBubble(t, func(t *testing.T, h *harness) {
				tries := counter(h, "a", tc.verb, tc.lease)
				refused := func(ctx context.Context, r leaseholdtest.Request) error {
					if r.Client == "a" && r.Verb == tc.verb && r.Name == tc.lease {
						return tc.err
					}
					return nil
				}
				h.srv.AddHook(refused)
				a := h.member("a").start()
				err := a.wait()
				if !errors.Is(err, ErrRefused) {
					t.Fatalf("Run = %v, want ErrRefused", err)
				}
				if !errors.Is(err, tc.err) {
					t.Errorf("Run's error %q does not wrap the server's %q", err, tc.err)
				}
				for _, w := range tc.want {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not say %q", err, w)
					}
				}
				if n := tries(); n != 1 {
					t.Errorf("%d %s requests, want 1: a permanent refusal is not retried", n, tc.verb)
				}
				if len(a.owned()) != 0 || len(h.works.runners()) != 0 {
					t.Errorf("shards still run: %v", h.works.runners())
				}
			})
		})
	}
}

// Transient failures are retried with capped backoff, logged once at
// error level (then once a minute), and their end is logged.
func TestTransientFailuresAreRetriedWithBackoffAndLoggedOnce(t *testing.T) {
	inBubble(t, func(t *testing.T, h *harness) {
		tries := counter(h, "a", "create", testGroup)
		var mu sync.Mutex
		failing := true
		h.srv.AddHook(func(ctx context.Context, r leaseholdtest.Request) error {
			mu.Lock()
			defer mu.Unlock()
			if failing && r.Client == "a" && r.Verb == "create" && r.Name == testGroup {
				return apierrors.NewInternalError(errors.New("etcd leader changed"))
			}
			return nil
		})
		heal := func() {
			mu.Lock()
			defer mu.Unlock()
			failing = false
		}
		a := h.member("a").start()
		h.advance(time.Minute)
		if len(a.owned()) != 0 {
			t.Fatalf("a runs %v without an assignment", a.owned())
		}
		// Backoff from RetryPeriod/4 doubling to RetryPeriod: about 31
		// tries in a minute; far fewer than a loop would make, and more
		// than one.
		if n := tries(); n < 20 || n > 40 {
			t.Errorf("%d tries in a minute, want about 31 (backoff 0.5s doubling to 2s)", n)
		}
		var errorLines int
		for _, l := range a.logs.matching("Request for the shard group failed") {
			if strings.Contains(l, `"error"=`) {
				errorLines++
			}
		}
		if errorLines < 1 || errorLines > 2 {
			t.Errorf("%d error lines for one streak of failures in a minute, want 1 or 2 (first, then once a minute)\n%s", errorLines, a.logs)
		}
		heal()
		h.until(5*time.Second, "a runs all 8 once the server answers", func() bool { return len(a.owned()) == 8 })
		if len(a.logs.matching("Recovered")) == 0 {
			t.Error("recovery not logged")
		}
		if done, err := a.returned(); done {
			t.Errorf("Run returned %v on transient failures", err)
		}
	})
}

// A 404 is news, never a reason to retry: a fence that finds the member
// Lease deleted makes that member absent from then on (its shards are
// taken LeaseDuration later), and is not sent again, though this member's
// watch, which would tell the same, is down.
func TestFenceThatFindsTheLeaseGoneIsNotRetried(t *testing.T) {
	inBubble(t, func(t *testing.T, h *harness) {
		a := h.member("a").start()
		b := h.member("b", func(c *Config) { c.ReleaseOnCancel = false }).start()
		h.until(time.Second, "balanced", func() bool { return balanced(8, a, b) })
		bShards := b.owned()
		fences := counter(h, "a", "update", MemberLeaseName(testGroup, "b"))
		refuse(h, "a", errors.New("connection reset (test: watch outage)"), "watch", "list") // never healed
		h.srv.CloseWatches()
		cutOff(h, "b")
		h.srv.Delete(testNS, MemberLeaseName(testGroup, "b"))
		h.until(20*time.Second, "a fences b's Lease", func() bool { return fences() > 0 })
		took := h.until(20*time.Second, "a runs all 8", func() bool { return len(a.owned()) == 8 })
		if took < 15*time.Second-h.step {
			t.Errorf("a took b's shards %v after its fence found b's Lease gone, before LeaseDuration", took)
		}
		h.advance(time.Minute)
		if n := fences(); n != 1 {
			t.Errorf("%d fences of b's deleted Lease, want 1: a 404 is not retried", n)
		}
		for _, s := range bShards {
			if len(h.works.runners()[s]) != 1 {
				t.Errorf("shard %d run by %v", s, h.works.runners()[s])
			}
		}
		h.works.check(t)
	})
}

// An update of the assignment that finds it deleted (404) is how a member
// whose watch is down learns of the deletion: it stops every shard and
// does not send the update again. Here the only other member's Lease was
// just fenced, so nobody else can run a shard: it creates the assignment
// again at once.
func TestAssignmentUpdateThatFindsItGoneIsNotRetried(t *testing.T) {
	inBubble(t, func(t *testing.T, h *harness) {
		a := h.member("a").start()
		b := h.member("b", func(c *Config) { c.ReleaseOnCancel = false }).start()
		h.until(time.Second, "balanced", func() bool { return balanced(8, a, b) })
		updates := counter(h, "a", "update", testGroup)
		refuse(h, "a", errors.New("connection reset (test: watch outage)"), "watch", "list") // never healed
		h.srv.CloseWatches()
		// b stops without releasing: once b's Lease has expired, a fences
		// it and claims b's shards by an update of the assignment.
		b.cancel()
		h.settle()
		uid := h.srv.Lease(testNS, testGroup).UID
		h.srv.Delete(testNS, testGroup)
		h.until(20*time.Second, "a updates the assignment", func() bool { return updates() > 0 })
		if l := h.srv.Lease(testNS, testGroup); l == nil || l.UID == uid {
			t.Fatalf("a did not create the assignment again after its update found it gone: %v", l)
		}
		if got := a.owned(); len(got) != 8 {
			t.Errorf("a runs %v, want all 8: nobody else can run one", got)
		}
		h.advance(10 * time.Second)
		if n := updates(); n != 1 {
			t.Errorf("%d updates of the assignment, want 1: a 404 is not retried", n)
		}
		h.works.mu.Lock()
		for s := 0; s < 8; s++ {
			if k := key("a", s); h.works.stops[k] < 1 && h.works.starts[k] > 1 {
				t.Errorf("shard %d restarted without being stopped", s)
			}
		}
		h.works.mu.Unlock()
		h.works.check(t)
	})
}

// A group watch that the server (or a proxy) ends as soon as it opened
// is reopened only after a backoff: no loop of watch requests.
func TestGroupWatchThatEndsAtOnceIsReopenedWithBackoff(t *testing.T) {
	inBubble(t, func(t *testing.T, h *harness) {
		var mu sync.Mutex
		opened, cutShort := 0, false
		// Runs last: lets the last watch's stopper below finish.
		t.Cleanup(func() { time.Sleep(time.Second) })
		a := h.member("a", func(c *Config) {
			c.Client = groupWatchWrapper{LeasesGetter: c.Client, wrap: func(w watch.Interface) watch.Interface {
				mu.Lock()
				defer mu.Unlock()
				opened++
				if !cutShort {
					return w
				}
				go func() {
					time.Sleep(10 * time.Millisecond)
					w.Stop()
				}()
				return w
			}}
		}).start()
		h.until(time.Second, "a runs all", func() bool { return len(a.owned()) == 8 })
		mu.Lock()
		cutShort, opened = true, 0
		mu.Unlock()
		h.srv.CloseWatches()
		h.advance(time.Minute)
		mu.Lock()
		n := opened
		mu.Unlock()
		// Backoff from RetryPeriod/4 doubling to 4 RetryPeriods: about 10
		// in a minute.
		if n < 3 || n > 20 {
			t.Errorf("%d group watches opened in a minute of watches ending at once, want about 10", n)
		}
		if len(a.owned()) != 8 {
			t.Errorf("a runs %v", a.owned())
		}
	})
}

// groupWatchWrapper tells attempt of every request to watch the group
// (the watch with a label selector), and passes every such watch opened
// through wrap. Both are optional.
type groupWatchWrapper struct {
	coordinationv1client.LeasesGetter
	attempt func()
	wrap    func(watch.Interface) watch.Interface
}

func (g groupWatchWrapper) Leases(namespace string) coordinationv1client.LeaseInterface {
	return groupWatchLeases{LeaseInterface: g.LeasesGetter.Leases(namespace), g: g}
}

type groupWatchLeases struct {
	coordinationv1client.LeaseInterface
	g groupWatchWrapper
}

func (l groupWatchLeases) Watch(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
	if opts.LabelSelector == "" {
		return l.LeaseInterface.Watch(ctx, opts)
	}
	if l.g.attempt != nil {
		l.g.attempt()
	}
	w, err := l.LeaseInterface.Watch(ctx, opts)
	if err != nil || l.g.wrap == nil {
		return w, err
	}
	return l.g.wrap(w), nil
}
