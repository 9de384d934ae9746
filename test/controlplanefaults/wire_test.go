package controlplanefaults

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"k8s.io/client-go/rest"
)

// call is one request of a client, as its wire saw it.
type call struct {
	Verb     string // get, list, watch, create, update, other
	Resource string
	RV       string // the resourceVersion query parameter
	Sent     time.Time
	Status   int
	Err      error
}

func (c call) ok() bool { return c.Err == nil && c.Status >= 200 && c.Status < 300 }

// gone is one real 410 Gone answer from the server, seen on the wire.
type gone struct {
	RV      string // the resourceVersion the watch asked for
	At      time.Time
	Event   bool // an ERROR event in a 200 stream (else an HTTP 410)
	Reason  string
	Message string
}

// wire is a client's transport: it records every request, reads every
// watch stream the client reads and notes each 410 Gone the server sent
// (an HTTP 410, or an ERROR event with code 410, as kube-apiserver sends
// it for a watch from a compacted resourceVersion), can hold new watch
// requests back (gate), and can end open watches (cut).
type wire struct {
	mu      sync.Mutex
	calls   []call
	gones   []gone
	events  int // watch events the client received (all types)
	watches []*watchBody
	gate    chan struct{} // non-nil: watch requests wait until it closes
	held    []string      // resourceVersions of watch requests held at the gate
	// beforeWrite, if set, runs before a create or update is sent, with
	// its body.
	beforeWrite func(c call, body []byte)
}

func (w *wire) wrap(cfg *rest.Config) *rest.Config {
	cfg = rest.CopyConfig(cfg)
	cfg.ContentType = "application/json"
	cfg.AcceptContentTypes = "application/json"
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper { return &wireRT{w: w, next: rt} })
	return cfg
}

type wireRT struct {
	w    *wire
	next http.RoundTripper
}

func (t *wireRT) WrappedRoundTripper() http.RoundTripper { return t.next }

func (t *wireRT) CancelRequest(req *http.Request) {
	if c, ok := t.next.(interface{ CancelRequest(*http.Request) }); ok {
		c.CancelRequest(req)
	}
}

func (t *wireRT) RoundTrip(req *http.Request) (*http.Response, error) {
	w := t.w
	c := classify(req)
	w.mu.Lock()
	before := w.beforeWrite
	w.mu.Unlock()
	if before != nil && req.Body != nil && (c.Verb == "update" || c.Verb == "create") {
		body, err := io.ReadAll(req.Body)
		_ = req.Body.Close()
		if err != nil {
			return nil, err
		}
		req = req.Clone(req.Context())
		req.Body = io.NopCloser(bytes.NewReader(body))
		req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
		before(c, body)
	}
	if c.Verb == "watch" {
		w.mu.Lock()
		gate := w.gate
		if gate != nil {
			w.held = append(w.held, c.RV)
		}
		w.mu.Unlock()
		if gate != nil {
			select {
			case <-gate:
			case <-req.Context().Done():
				return nil, req.Context().Err()
			}
		}
	}
	c.Sent = time.Now()
	resp, err := t.next.RoundTrip(req)
	c.Err = err
	if resp != nil {
		c.Status = resp.StatusCode
		switch {
		case resp.StatusCode == http.StatusGone:
			w.mu.Lock()
			w.gones = append(w.gones, gone{RV: c.RV, At: time.Now()})
			w.mu.Unlock()
		case c.Verb == "watch" && resp.StatusCode == http.StatusOK:
			b := &watchBody{ReadCloser: resp.Body, w: w, rv: c.RV}
			resp.Body = b
			w.mu.Lock()
			w.watches = append(w.watches, b)
			w.mu.Unlock()
		}
	}
	w.mu.Lock()
	w.calls = append(w.calls, c)
	w.mu.Unlock()
	return resp, err
}

func (w *wire) setBeforeWrite(f func(c call, body []byte)) {
	w.mu.Lock()
	w.beforeWrite = f
	w.mu.Unlock()
}

// holdWatches makes new watch requests wait until releaseWatches.
func (w *wire) holdWatches() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.gate == nil {
		w.gate = make(chan struct{})
		w.held = nil
	}
}

// releaseWatches lets held watch requests through and returns the
// resourceVersions they asked for.
func (w *wire) releaseWatches() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.gate != nil {
		close(w.gate)
		w.gate = nil
	}
	return w.held
}

// heldRVs returns the resourceVersions of the watch requests held so far.
func (w *wire) heldRVs() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.held...)
}

// cutWatches ends every open watch as a server closing it cleanly does.
func (w *wire) cutWatches() int {
	w.mu.Lock()
	ws := w.watches
	w.watches = nil
	w.mu.Unlock()
	n := 0
	for _, b := range ws {
		if b.cut() {
			n++
		}
	}
	return n
}

func (w *wire) all() []call {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]call(nil), w.calls...)
}

func (w *wire) goneSeen() []gone {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]gone(nil), w.gones...)
}

func (w *wire) eventCount() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.events
}

// count returns the lease calls with verb sent at or after since that
// match f (nil: all).
func (w *wire) count(verb string, since time.Time, f func(call) bool) int {
	n := 0
	for _, c := range w.all() {
		if c.Resource == "leases" && c.Verb == verb && !c.Sent.Before(since) && (f == nil || f(c)) {
			n++
		}
	}
	return n
}

// watchBody reads a JSON watch stream on the client's behalf, one event
// per line, and notes ERROR events.
type watchBody struct {
	io.ReadCloser
	w    *wire
	rv   string
	line bytes.Buffer

	mu     sync.Mutex
	isCut  bool
	closed bool
}

func (b *watchBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.mu.Lock()
	isCut := b.isCut
	b.mu.Unlock()
	if isCut {
		return 0, io.EOF
	}
	b.scan(p[:n])
	return n, err
}

// scan splits what the client read into lines and notes each event.
func (b *watchBody) scan(p []byte) {
	b.line.Write(p)
	for {
		i := bytes.IndexByte(b.line.Bytes(), '\n')
		if i < 0 {
			return
		}
		ln := append([]byte(nil), b.line.Next(i+1)...)
		var ev struct {
			Type   string `json:"type"`
			Object struct {
				Kind    string `json:"kind"`
				Code    int    `json:"code"`
				Reason  string `json:"reason"`
				Message string `json:"message"`
			} `json:"object"`
		}
		if json.Unmarshal(ln, &ev) != nil {
			continue
		}
		b.w.mu.Lock()
		b.w.events++
		if ev.Type == "ERROR" && ev.Object.Code == http.StatusGone {
			b.w.gones = append(b.w.gones, gone{RV: b.rv, At: time.Now(), Event: true, Reason: ev.Object.Reason, Message: ev.Object.Message})
		}
		b.w.mu.Unlock()
	}
}

func (b *watchBody) cut() bool {
	b.mu.Lock()
	if b.isCut || b.closed {
		b.mu.Unlock()
		return false
	}
	b.isCut = true
	b.mu.Unlock()
	_ = b.ReadCloser.Close()
	return true
}

func (b *watchBody) Close() error {
	b.mu.Lock()
	already := b.closed || b.isCut
	b.closed = true
	b.mu.Unlock()
	if already {
		return nil
	}
	return b.ReadCloser.Close()
}

// classify names a request's verb as the API server's authorizer does.
func classify(req *http.Request) call {
	c := call{Verb: "other"}
	q := req.URL.Query()
	c.RV = q.Get("resourceVersion")
	parts := strings.Split(strings.Trim(req.URL.Path, "/"), "/")
	for i := 0; i+2 < len(parts); i++ {
		if parts[i] == "namespaces" {
			c.Resource = parts[i+2]
			break
		}
	}
	isNamed := func() bool {
		for i := 0; i+3 < len(parts); i++ {
			if parts[i] == "namespaces" {
				return true
			}
		}
		return false
	}
	switch req.Method {
	case http.MethodGet:
		switch {
		case q.Get("watch") == "true" || q.Get("watch") == "1":
			c.Verb = "watch"
		case isNamed():
			c.Verb = "get"
		default:
			c.Verb = "list"
		}
	case http.MethodPost:
		c.Verb = "create"
	case http.MethodPut:
		c.Verb = "update"
	}
	return c
}
