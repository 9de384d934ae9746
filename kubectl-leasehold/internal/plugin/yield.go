package plugin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"

	"github.com/leasehold/leasehold/internal/leaserecord"
)

// DefaultYieldTimeout is how long yield waits for the handoff by default.
const DefaultYieldTimeout = 30 * time.Second

// withdrawTimeout bounds the request that removes the annotation at the end.
const withdrawTimeout = 5 * time.Second

type yieldOptions struct {
	*Options
	name    string
	to      string
	timeout time.Duration
}

func newYieldCommand(o *Options) *cobra.Command {
	yo := &yieldOptions{Options: o}
	cmd := &cobra.Command{
		Use:   "yield NAME [--to ID]",
		Short: "Ask the holder of a Lease to hand it over, and wait until it has",
		Long: `Ask the leasehold leader holding the Lease NAME to hand it over, to the
candidate ID with --to, or to any other candidate without it. Then wait until
another candidate holds the Lease, or --timeout passes, and print who holds it
and how long the handoff took.

The request is the annotation leasehold.dev/preferred-holder=ID ("*" without
--to). A leasehold leader that sees it cancels its work, waits for it to
return and releases the Lease naming the successor, which takes it at once.
Whatever the outcome, yield removes the annotation before it exits (unless
someone changed it meanwhile), so no request is left pending. Holders that do
not run leasehold (client-go's leaderelection, for one) ignore the
annotation; yield then times out and says so.`,
		Example: `  # before draining the node of the leader: hand over to anyone else
  kubectl leasehold yield my-controller -n my-system
  # hand over to one replica
  kubectl leasehold yield my-controller -n my-system --to my-controller-7c9f-2`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			yo.name = args[0]
			return yo.run(cmd.Context())
		},
	}
	cmd.Flags().StringVar(&yo.to, "to", "", "identity of the candidate to hand over to (default: any other candidate)")
	cmd.Flags().DurationVar(&yo.timeout, "timeout", DefaultYieldTimeout, "how long to wait for the handoff")
	return cmd
}

// yieldOutcome is how the wait for the handoff ended.
type yieldOutcome struct {
	lease   *coordinationv1.Lease // the last version seen
	deleted bool
	elapsed time.Duration
	// releasedAfter is when, after the request, the Lease was first seen
	// with no holder; zero if it went straight from holder to holder.
	releasedAfter time.Duration
}

// unheld says for how long the Lease had no holder during the handoff.
func (r yieldOutcome) unheld() string {
	if r.releasedAfter == 0 {
		return ""
	}
	return fmt.Sprintf(" (unheld for %s)", humanDuration(r.elapsed-r.releasedAfter))
}

func (o *yieldOptions) run(ctx context.Context) error {
	if o.timeout <= 0 {
		return &hintError{err: fmt.Errorf("--timeout must be positive, not %v", o.timeout), hint: "Fix: pass a duration such as --timeout 30s."}
	}
	if o.to == AnyHolder {
		return &hintError{err: fmt.Errorf("--to %q is not an identity", AnyHolder), hint: "Fix: leave --to out to hand over to any other candidate."}
	}
	client, err := o.newClient()
	if err != nil {
		return err
	}
	ns, err := o.namespace()
	if err != nil {
		return err
	}
	ref := leaseRef(ns, o.name)
	logger := klog.FromContext(ctx).WithValues("lease", klog.KRef(ns, o.name))
	ctx = klog.NewContext(ctx, logger)
	leases := client.CoordinationV1().Leases(ns)
	out := o.IOStreams.Out

	cur, err := leases.Get(ctx, o.name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return notFound(ctx, client, ns, o.name)
	}
	if err != nil {
		return apiError(err, "get", ns)
	}
	from := leaserecord.Holder(cur)
	if from == "" {
		return &hintError{err: fmt.Errorf("%s has no holder: there is nothing to hand over", ref),
			hint: fmt.Sprintf("Fix: wait for a candidate to take it ('kubectl leasehold watch %s -n %s').", o.name, ns)}
	}
	if from == o.to {
		fmt.Fprintf(out, "%s: already held by %s\n", ref, from)
		return nil
	}
	want := o.to
	if want == "" {
		want = AnyHolder
	}
	if prev := requestedHolder(cur); prev != "" && prev != want {
		fmt.Fprintf(o.IOStreams.ErrOut, "warning: %s: replacing a pending handoff request to %q\n", ref, prev)
	}

	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{PreferredHolderAnnotation: want}}})
	if err != nil {
		return err
	}
	start := o.now()
	patched, err := leases.Patch(ctx, o.name, types.MergePatchType, patch, metav1.PatchOptions{FieldManager: userAgent})
	if apierrors.IsNotFound(err) {
		return notFound(ctx, client, ns, o.name)
	}
	if err != nil {
		return apiError(err, "patch", ns)
	}
	logger.V(2).Info("Requested a handoff", "holder", from, "preferredHolder", want, "resourceVersion", patched.ResourceVersion)
	fmt.Fprintf(out, "%s: asked %s to hand over to %s\n", ref, from, target(o.to))

	res, waitErr := o.wait(ctx, client, ns, from, patched, start)
	o.withdraw(ctx, client, ns, want)

	now := leaserecord.Holder(res.lease)
	took := humanDuration(res.elapsed)
	switch {
	case waitErr == nil && res.deleted:
		return fmt.Errorf("%s was deleted %s after the handoff request", ref, took)
	case waitErr == nil && (o.to == "" || now == o.to):
		fmt.Fprintf(out, "%s: %s holds the Lease now; the handoff took %s%s\n", ref, now, took, res.unheld())
		return nil
	case waitErr == nil:
		return fmt.Errorf("%s: %s took the Lease, not %s (after %s)", ref, now, o.to, took)
	case errors.Is(waitErr, context.DeadlineExceeded) && ctx.Err() == nil:
		state := "still held by " + from
		if now == "" {
			state = fmt.Sprintf("released by %s, but nobody took it: the Lease has been unheld for %s", from, humanDuration(res.elapsed-res.releasedAfter))
		}
		hint := "Fix: only leasehold electors hand over on request (client-go's leaderelection ignores the annotation): check that the holder runs leasehold with handoff support"
		if o.to != "" {
			hint += fmt.Sprintf(", and that candidate %s is running and campaigning for this Lease", o.to)
		}
		return &hintError{err: fmt.Errorf("%s: %s after %s; the handoff request was withdrawn", ref, state, humanDuration(o.timeout)), hint: hint + "."}
	case ctx.Err() != nil:
		return fmt.Errorf("%s: interrupted after %s, held by %s; the handoff request was withdrawn", ref, took, orNone(now))
	}
	return waitErr
}

// target describes where the Lease should go.
func target(to string) string {
	if to == "" {
		return "any other candidate"
	}
	return to
}

// wait follows the Lease from the patched version until someone other than
// from holds it (o.to, if set), it is deleted, or the timeout passes.
func (o *yieldOptions) wait(ctx context.Context, client kubernetes.Interface, ns, from string, patched *coordinationv1.Lease, start time.Time) (yieldOutcome, error) {
	res := yieldOutcome{lease: patched}
	moved := func(l *coordinationv1.Lease) bool {
		h := leaserecord.Holder(l)
		return h != "" && h != from
	}
	if moved(patched) {
		res.elapsed = o.now().Sub(start)
		return res, nil
	}
	wctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	err := followLease(wctx, client, ns, o.name, patched.ResourceVersion, func(typ watch.EventType, l *coordinationv1.Lease) (bool, error) {
		res.lease = l
		res.elapsed = o.now().Sub(start)
		if typ == watch.Deleted {
			res.deleted = true
			return true, nil
		}
		if h := leaserecord.Holder(l); h == "" && res.releasedAfter == 0 {
			res.releasedAfter = max(res.elapsed, time.Nanosecond)
			klog.FromContext(ctx).V(2).Info("Lease released", "by", from, "after", res.elapsed)
		}
		return moved(l), nil
	})
	if err != nil {
		res.elapsed = o.now().Sub(start)
	}
	return res, err
}

// withdraw removes the annotation if it still asks for want, so that no
// request outlives the command. The new holder may have cleared it
// already; then the patch's test fails and nothing changes.
func (o *yieldOptions) withdraw(ctx context.Context, client kubernetes.Interface, ns, want string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), withdrawTimeout)
	defer cancel()
	path := "/metadata/annotations/" + strings.ReplaceAll(strings.ReplaceAll(PreferredHolderAnnotation, "~", "~0"), "/", "~1")
	patch, _ := json.Marshal([]map[string]any{
		{"op": "test", "path": path, "value": want},
		{"op": "remove", "path": path},
	})
	_, err := client.CoordinationV1().Leases(ns).Patch(ctx, o.name, types.JSONPatchType, patch, metav1.PatchOptions{FieldManager: userAgent})
	switch {
	case err == nil:
		klog.FromContext(ctx).V(2).Info("Withdrew the handoff request")
	case apierrors.IsNotFound(err), apierrors.IsInvalid(err), isTestFailed(err):
		// Gone, or the annotation was cleared or changed by someone else.
		klog.FromContext(ctx).V(2).Info("Handoff request already cleared", "err", err)
	default:
		fmt.Fprintf(o.IOStreams.ErrOut, "warning: could not remove the annotation %s from %s: %v\n  remove it with: kubectl annotate lease %s -n %s %s-\n",
			PreferredHolderAnnotation, leaseRef(ns, o.name), err, o.name, ns, PreferredHolderAnnotation)
	}
}

// isTestFailed reports a JSON patch whose "test" operation did not match.
// The API server answers 422 Invalid (or 500 from some versions) with the
// json-patch library's message.
func isTestFailed(err error) bool {
	return strings.Contains(err.Error(), "testing value") || strings.Contains(err.Error(), "test operation")
}
