package plugin

import (
	"context"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"

	"github.com/leasehold/leasehold/internal/watchloop"
)

// maxRetryDelay caps the wait between attempts to re-open a failed watch.
const maxRetryDelay = 5 * time.Second

// followLease watches the Lease ns/name, starting after resourceVersion rv
// (the version the caller has already seen), and calls fn with each newer
// version in order: Added, Modified or Deleted (with the last version
// seen). It returns nil when fn says done, fn's error, a watch error that
// retrying cannot fix (RBAC), or ctx.Err() when ctx ends.
//
// A watch the server closes is re-opened from the last version seen; one
// that has expired (410 Gone) is replaced by a fresh list, and what changed
// meanwhile is delivered as one event.
func followLease(ctx context.Context, client kubernetes.Interface, ns, name, rv string,
	fn func(watch.EventType, *coordinationv1.Lease) (done bool, err error)) error {
	logger := klog.FromContext(ctx).WithValues("lease", klog.KRef(ns, name))
	leases := client.CoordinationV1().Leases(ns)
	selector := fields.OneTermEqualSelector("metadata.name", name).String()
	lastRV, exists := rv, true
	var last *coordinationv1.Lease
	delay := 100 * time.Millisecond

	retry := func(err error) error {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if apierrors.IsForbidden(err) || apierrors.IsUnauthorized(err) {
			return apiError(err, "watch", ns)
		}
		logger.V(1).Info("Watch failed, retrying", "err", err, "delay", delay)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay):
		}
		delay = min(2*delay, maxRetryDelay)
		return nil
	}

	for {
		if rv == "" {
			// The watch expired: list, deliver what changed, watch from the list.
			list, err := leases.List(ctx, metav1.ListOptions{FieldSelector: selector})
			if err != nil {
				if err := retry(err); err != nil {
					return err
				}
				continue
			}
			rv = list.ResourceVersion
			var cur *coordinationv1.Lease
			for i := range list.Items {
				if list.Items[i].Name == name {
					cur = &list.Items[i]
				}
			}
			var typ watch.EventType
			switch {
			case cur == nil && exists && last != nil:
				typ, cur = watch.Deleted, last
			case cur != nil && !exists:
				typ = watch.Added
			case cur != nil && (cur.ResourceVersion != lastRV || cur.ResourceVersion == ""):
				// (Without a resourceVersion, as from client-go's fake
				// clientset, it may have changed: deliver it.)
				typ = watch.Modified
			}
			if typ != "" {
				exists, lastRV, last = typ != watch.Deleted, cur.ResourceVersion, cur
				if done, err := fn(typ, cur); done || err != nil {
					return err
				}
			}
		}

		logger.V(3).Info("Watching", "resourceVersion", rv)
		w, err := leases.Watch(ctx, metav1.ListOptions{FieldSelector: selector, ResourceVersion: rv, AllowWatchBookmarks: true})
		if err != nil {
			if apierrors.IsResourceExpired(err) || apierrors.IsGone(err) {
				rv = ""
				continue
			}
			if err := retry(err); err != nil {
				return err
			}
			continue
		}
		var done bool
		var fnErr error
		var end watchloop.End
		var werr error
		rv, end, werr = watchloop.Read(ctx, w, rv, func(typ watch.EventType, l *coordinationv1.Lease) bool {
			if l.Name != name {
				return true
			}
			delay = 100 * time.Millisecond
			if typ != watch.Deleted && l.ResourceVersion != "" && l.ResourceVersion == lastRV {
				return true
			}
			exists, lastRV, last = typ != watch.Deleted, l.ResourceVersion, l
			done, fnErr = fn(typ, l)
			return !done && fnErr == nil
		})
		switch {
		case done || fnErr != nil:
			return fnErr
		case end == watchloop.Stopped:
			return ctx.Err()
		case end == watchloop.Failed:
			logger.V(1).Info("Watch error, re-reading the Lease", "err", werr)
			rv = ""
		default:
			logger.V(3).Info("Watch closed by the server, re-opening", "resourceVersion", rv)
		}
	}
}
