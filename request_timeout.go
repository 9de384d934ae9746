package leasehold

import (
	"context"
	"io"
	"net/http"
	"time"

	"k8s.io/client-go/rest"
)

// The one request-timeout rule (RequestTimeout): every request of an
// election is bounded by it, and WithRequestTimeout applies it to a
// rest.Config for the clients an election uses.

// RequestTimeout is the one rule that bounds each of the election's
// requests: max(renewDeadline/2, 1s), so that a hung request fails with
// time left in the deadline for another attempt, yet a slow but healthy
// server is not cut off. The elector applies it to its own requests
// itself, and cuts a renewal shorter still when less of the deadline
// remains. A zero renewDeadline means the default.
func RequestTimeout(renewDeadline time.Duration) time.Duration {
	if renewDeadline == 0 {
		renewDeadline = DefaultRenewDeadline
	}
	return max(renewDeadline/2, time.Second)
}

// WithRequestTimeout returns a copy of cfg whose requests time out after
// RequestTimeout(renewDeadline), except watches, which are long-running by
// design. (rest.Config.Timeout would cut every watch after the timeout
// too.)
//
// The elector needs no such wrapper: it bounds every request it makes.
// Use this only for a clientset that serves the election alone, to bound
// requests at the transport as well. Never wrap the clientset your
// controller shares: its own LISTs may rightly take longer.
func WithRequestTimeout(cfg *rest.Config, renewDeadline time.Duration) *rest.Config {
	out := rest.CopyConfig(cfg)
	d := RequestTimeout(renewDeadline)
	out.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return &requestTimeout{next: rt, timeout: d}
	})
	return out
}

// requestTimeout bounds each non-watch request, body included.
type requestTimeout struct {
	next    http.RoundTripper
	timeout time.Duration
}

func (t *requestTimeout) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Query().Get("watch") == "true" {
		return t.next.RoundTrip(req)
	}
	ctx, cancel := context.WithTimeout(req.Context(), t.timeout)
	resp, err := t.next.RoundTrip(req.WithContext(ctx))
	if err != nil {
		cancel()
		return nil, err
	}
	resp.Body = &cancelOnClose{ReadCloser: resp.Body, cancel: cancel}
	return resp, nil
}

// cancelOnClose releases a request's timeout when its body is closed.
type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (c *cancelOnClose) Close() error {
	err := c.ReadCloser.Close()
	c.cancel()
	return err
}
