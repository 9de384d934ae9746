package plugin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/klog/v2"

	"github.com/leasehold/leasehold/internal/leaserecord"
)

type watchOptions struct {
	*Options
	name string
}

func newWatchCommand(o *Options) *cobra.Command {
	wo := &watchOptions{Options: o}
	return &cobra.Command{
		Use:   "watch NAME",
		Short: "Print a live timeline of a Lease's holder changes and renewals",
		Long: `Print a live timeline of the Lease NAME: one line per renewal, release,
takeover, handoff request, creation and deletion, as this machine sees them
(through a watch, not by polling). Intervals are measured on this machine's
clock. When no change arrives for a whole lease duration, it says that the
holder's claim has run out. Stop with Ctrl-C.`,
		Example: `  kubectl leasehold watch my-controller -n my-system`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			wo.name = args[0]
			return wo.run(cmd.Context())
		},
	}
}

type leaseChange struct {
	typ   watch.EventType
	lease *coordinationv1.Lease
}

func (o *watchOptions) run(ctx context.Context) error {
	client, err := o.newClient()
	if err != nil {
		return err
	}
	ns, err := o.namespace()
	if err != nil {
		return err
	}
	logger := klog.FromContext(ctx).WithValues("lease", klog.KRef(ns, o.name))
	ctx = klog.NewContext(ctx, logger)

	l, err := client.CoordinationV1().Leases(ns).Get(ctx, o.name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return notFound(ctx, client, ns, o.name)
	}
	if err != nil {
		return apiError(err, "get", ns)
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	changes := make(chan leaseChange)
	followed := make(chan error, 1)
	go func() {
		followed <- followLease(ctx, client, ns, o.name, l.ResourceVersion, func(typ watch.EventType, l *coordinationv1.Lease) (bool, error) {
			select {
			case changes <- leaseChange{typ, l}:
				return false, nil
			case <-ctx.Done():
				return true, ctx.Err()
			}
		})
	}()

	tl := &timeline{w: o.IOStreams.Out, now: o.now}
	tl.start(l)
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		var expiry <-chan time.Time
		if timer != nil {
			timer.Stop()
		}
		if d := tl.untilExpiry(); d >= 0 {
			timer = time.NewTimer(d)
			expiry = timer.C
		}
		select {
		case c := <-changes:
			tl.change(c.typ, c.lease)
		case <-expiry:
			tl.expired()
		case err := <-followed:
			if ctx.Err() != nil || errors.Is(err, context.Canceled) {
				tl.line("stopped")
				return nil
			}
			return err
		}
	}
}

// timeline prints the changes of one Lease, one line each, and keeps what
// it needs to describe the next one.
type timeline struct {
	w   io.Writer
	now func() time.Time

	last    *coordinationv1.Lease // nil after a deletion
	lastAt  time.Time             // local time of the last renewal or takeover seen
	warned  bool                  // expiry already reported for lastAt
	freedAt time.Time             // local time of the release seen, if released
}

func (t *timeline) line(format string, args ...any) {
	fmt.Fprintf(t.w, "%s  %s\n", clock(t.now()), fmt.Sprintf(format, args...))
}

// start prints the Lease as it is now.
func (t *timeline) start(l *coordinationv1.Lease) {
	now := t.now()
	t.last, t.lastAt = l, now
	s := statusOf(l, now)
	var parts []string
	if s.SinceRenewal != nil {
		parts = append(parts, "renewed "+renewedCell(&s))
	}
	parts = append(parts, "duration "+durationCell(&s), fmt.Sprintf("%d transitions", s.Transitions))
	if p := preferredCell(&s); p != none {
		parts = append(parts, "handoff requested to "+p)
	}
	state := "held by " + s.Holder
	if s.Holder == "" {
		state, t.freedAt = "not held", now
	}
	t.line("%s %s (%s)", leaseRef(l.Namespace, l.Name), state, strings.Join(parts, ", "))
}

// untilExpiry is how long until the held Lease's claim runs out by this
// machine's clock (from the last renewal seen), or -1 if there is nothing to
// wait for.
func (t *timeline) untilExpiry() time.Duration {
	if t.last == nil || t.warned || leaserecord.Holder(t.last) == "" || t.last.Spec.LeaseDurationSeconds == nil {
		return -1
	}
	return max(0, t.lastAt.Add(time.Duration(*t.last.Spec.LeaseDurationSeconds)*time.Second).Sub(t.now()))
}

func (t *timeline) expired() {
	t.warned = true
	t.line("no renewal seen for %s: %s's claim has run out; a candidate may take over",
		seconds(*t.last.Spec.LeaseDurationSeconds), leaserecord.Holder(t.last))
}

// change prints what changed from the previous version to l.
func (t *timeline) change(typ watch.EventType, l *coordinationv1.Lease) {
	now := t.now()
	prev := t.last
	switch {
	case typ == watch.Deleted:
		t.line("Lease deleted (last holder: %s)", orNone(leaserecord.Holder(l)))
		t.last = nil
		return
	case prev == nil:
		t.last, t.lastAt, t.warned = l, now, false
		t.line("Lease created, held by %s", orNone(leaserecord.Holder(l)))
		return
	}
	t.last = l
	from, to := leaserecord.Holder(prev), leaserecord.Holder(l)
	trans := int32(0)
	if l.Spec.LeaseTransitions != nil {
		trans = *l.Spec.LeaseTransitions
	}
	switch {
	case from != "" && to == "":
		t.line("released by %s", from)
		t.freedAt = now
	case from == "" && to != "":
		t.line("%s acquired the Lease (transition %d; it was free for %s)", to, trans, humanDuration(now.Sub(t.freedAt)))
		t.lastAt, t.warned = now, false
	case from != to:
		t.line("%s took over from %s (transition %d; %s after %s's last renewal seen here)", to, from, trans, humanDuration(now.Sub(t.lastAt)), from)
		t.lastAt, t.warned = now, false
	case to != "" && !sameTime(prev.Spec.RenewTime, l.Spec.RenewTime):
		t.line("renewed by %s (+%s)", to, humanDuration(now.Sub(t.lastAt)))
		t.lastAt, t.warned = now, false
	}
	if a, b := requestedHolder(prev), requestedHolder(l); a != b {
		switch {
		case b == "":
			t.line("handoff request cleared")
		case b == AnyHolder:
			t.line("handoff requested: %s should hand over to any other candidate", orNone(to))
		default:
			t.line("handoff requested: %s should hand over to %s", orNone(to), b)
		}
	}
	if a, b := ptrString(prev.Spec.PreferredHolder), ptrString(l.Spec.PreferredHolder); a != b {
		t.line("spec.preferredHolder: %s -> %s", orNone(a), orNone(b))
	}
	if a, b := prev.Spec.LeaseDurationSeconds, l.Spec.LeaseDurationSeconds; a != nil && b != nil && *a != *b {
		t.line("lease duration %s -> %s", seconds(*a), seconds(*b))
	}
}

func sameTime(a, b *metav1.MicroTime) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Equal(b)
}

func ptrString(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}
