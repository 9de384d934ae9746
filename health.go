package leasehold

// Health: Check, what it knows of the API server, and the HTTP handler
// that serves it to a liveness probe.

import (
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/leasehold/leasehold/internal/retry"
)

// HealthHandler serves Check(maxTolerableExpiredLease) over HTTP for a
// liveness probe: 200 "ok" when healthy, 500 with the reason otherwise.
//
// Use it for liveness, not readiness: followers are healthy, and gating
// readiness on leadership keeps all but one replica unready, which stalls
// rolling updates.
func (e *Elector) HealthHandler(maxTolerableExpiredLease time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if err := e.Check(maxTolerableExpiredLease); err != nil {
			http.Error(w, fmt.Sprintf("leader election: %v", err), http.StatusInternalServerError)
			return
		}
		_, _ = w.Write([]byte("ok"))
	})
}

// Check is a health check for a liveness probe. It fails when this process
// believes it leads but has not renewed for RenewDeadline plus
// maxTolerableExpiredLease (its loop is stuck), when the work of a lost
// term has outlived the safety margin (the process must be restarted to be
// sure it stopped), and when every request to the API server has failed,
// or the server has refused every write of the Lease (RBAC forbids it,
// the namespace is missing, the Lease is invalid), for longer than
// LeaseDuration plus maxTolerableExpiredLease: such a process would never
// lead. It also fails for LeaseDuration plus maxTolerableExpiredLease
// after the server refused a release for good (the error wraps
// ErrLeaseRefused or ErrForbidden). Otherwise a follower is healthy.
func (e *Elector) Check(maxTolerableExpiredLease time.Duration) error {
	now := e.clock.Now()
	if since := e.health.since(); !since.IsZero() && now.Sub(since) > e.t.leaseDuration+maxTolerableExpiredLease {
		return fmt.Errorf("%w: %s: every request has failed for %v", ErrAPIUnreachable, e.cfg.Name, now.Sub(since).Round(time.Millisecond))
	}
	if since, err := e.health.refusedFor(); err != nil && now.Sub(since) > e.t.leaseDuration+maxTolerableExpiredLease {
		sentinel := ErrLeaseRefused
		if apierrors.IsForbidden(err) {
			sentinel = ErrForbidden
		}
		return fmt.Errorf("%w: %s: for %v: %w", sentinel, e.cfg.Name, now.Sub(since).Round(time.Millisecond), err)
	}
	if at, err := e.health.releaseRefusal(); err != nil && now.Sub(at) < e.t.leaseDuration+maxTolerableExpiredLease {
		return fmt.Errorf("%s: %w (%v ago; the Lease expires on its own)", e.cfg.Name, err, now.Sub(at).Round(time.Millisecond))
	}
	st := e.statusNow()
	if st.workOverdue {
		return fmt.Errorf("%w: %s: OnStartedLeading still running %v after the lease was lost",
			ErrWorkOutlivedLease, e.cfg.Name, now.Sub(st.workOverdueSince).Round(time.Millisecond))
	}
	if st.leading {
		if stalled := elapsed(st.lastRenewSent, instant{at: now, boot: e.now().boot}); stalled > e.t.renewDeadline+maxTolerableExpiredLease {
			return fmt.Errorf("%w: %s: leading but last successful renewal sent %v ago (renewDeadline %v, tolerance %v)",
				ErrRenewStalled, e.cfg.Name, stalled.Round(time.Millisecond), e.t.renewDeadline, maxTolerableExpiredLease)
		}
	}
	return nil
}

// unreachable reports whether err means the API server did not serve the
// request: no answer, a timeout, a 5xx or a 429. A 403 or 404 is an
// answer, and is reported on its own.
func unreachable(err error) bool {
	var st apierrors.APIStatus
	if errors.As(err, &st) {
		code := st.Status().Code
		return code >= 500 || code == 429
	}
	return true
}

// apiHealth tracks since when requests to the API server have been failing
// without a success, for Check.
type apiHealth struct {
	mu           sync.Mutex
	failingSince time.Time
	// refusedSince and refused record a run of writes that the server
	// refused for good: retrying the same write cannot succeed.
	refusedSince time.Time
	refused      error
	// releaseRefused is the error of a release the server refused for
	// good, and releaseRefusedAt when: Check reports it for one
	// LeaseDuration (while the Lease, still naming this process, runs
	// out), or until a later write succeeds.
	releaseRefused   error
	releaseRefusedAt time.Time
}

// refusedRelease records a release the server refused for good.
func (h *apiHealth) refusedRelease(now time.Time, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.releaseRefused, h.releaseRefusedAt = err, now
}

// releaseRefusal returns the last refused release and when, nil if none
// since the last successful write.
func (h *apiHealth) releaseRefusal() (time.Time, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.releaseRefusedAt, h.releaseRefused
}

// refusal reports whether err is the server refusing a write for good:
// retry.Permanent (403, 400, 422, 413, 405, 406, 415) or, for a create,
// the namespace does not exist (404). Sending the same write again cannot
// succeed; every other failure is transient and retried with backoff.
func refusal(err error, create bool) bool {
	return retry.Permanent(err) || (create && apierrors.IsNotFound(err))
}

// refusedError wraps a refusal in the sentinel callers match: ErrForbidden
// for RBAC, ErrLeaseRefused otherwise.
func refusedError(what string, err error) error {
	if apierrors.IsForbidden(err) {
		return fmt.Errorf("%w: %s: %w", ErrForbidden, what, err)
	}
	return fmt.Errorf("%w: %s: %w", ErrLeaseRefused, what, err)
}

// write records the outcome of a write of the Lease; create says whether
// it was a create.
func (h *apiHealth) write(now time.Time, err error, create bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case err == nil:
		h.refusedSince, h.refused = time.Time{}, nil
		h.releaseRefused = nil
	case refusal(err, create):
		if h.refusedSince.IsZero() {
			h.refusedSince = now
		}
		h.refused = err
	}
}

// refusedFor returns the last refused write's error and since when writes
// have been refused, or a nil error.
func (h *apiHealth) refusedFor() (time.Time, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.refusedSince, h.refused
}

func (h *apiHealth) failed(now time.Time) {
	if h == nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.failingSince.IsZero() {
		h.failingSince = now
	}
}

func (h *apiHealth) succeeded() {
	if h == nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.failingSince = time.Time{}
}

// since returns when the current run of failures began, zero if none.
func (h *apiHealth) since() time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.failingSince
}
