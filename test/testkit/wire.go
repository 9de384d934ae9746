package testkit

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	"k8s.io/client-go/rest"
)

// Call is one request of a client, as its Wire saw it.
type Call struct {
	// Verb is get, list, watch, create, update, patch, delete or other,
	// as the API server's authorizer names it.
	Verb string
	// Resource is the resource segment of the path ("leases"), Name the
	// object's name if the path has one.
	Resource, Name string
	// RV is the resourceVersion query parameter (watch, list, get).
	RV string
	// Holder is the holderIdentity in a Lease's create or update body,
	// and HasBody says the body was decoded.
	Holder  string
	HasBody bool
	// Sent is when the request was handed to the transport, Done when its
	// response headers (or error) came back.
	Sent, Done time.Time
	Status     int
	Err        error
}

// OK says the request got a 2xx answer.
func (c Call) OK() bool { return c.Err == nil && c.Status >= 200 && c.Status < 300 }

// IsOK is Call.OK, as a filter for Wire.Count.
func IsOK(c Call) bool { return c.OK() }

// Gone is one 410 Gone answer on the wire: an HTTP 410, or an ERROR event
// with code 410 in a watch stream, as kube-apiserver sends it for a watch
// from a compacted resourceVersion.
type Gone struct {
	RV      string // the resourceVersion the request asked for
	At      time.Time
	Event   bool // an ERROR event in a 200 stream (else an HTTP 410)
	Reason  string
	Message string
}

// Wire is one client's transport, installed by Wrap: it records every
// request, lets a test act just before a request is sent (to race another
// writer against it, or to answer it itself: SetBefore), can hold new
// watch requests back (HoldWatches), reads every watch stream the client
// reads (counting its bytes and events, noting each 410 Gone), and can end
// open watches as a server closing them cleanly does (CutWatches).
type Wire struct {
	mu      sync.Mutex
	calls   []Call
	gones   []Gone
	events  int
	watches []*watchBody
	gate    chan struct{} // non-nil: watch requests wait until it closes
	held    []string      // resourceVersions of the watch requests held at the gate
	before  func(c Call, req *http.Request) *http.Response

	watchBytes atomic.Int64
}

// JSON returns a copy of cfg whose clients send and accept JSON, so that a
// Wire can read the Lease in a request body and the events of a watch.
func JSON(cfg *rest.Config) *rest.Config {
	cfg = rest.CopyConfig(cfg)
	cfg.ContentType = "application/json"
	cfg.AcceptContentTypes = "application/json"
	return cfg
}

// Wrap returns a copy of cfg, speaking JSON, whose requests go through w.
func (w *Wire) Wrap(cfg *rest.Config) *rest.Config {
	cfg = JSON(cfg)
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper { return &wireTransport{w: w, next: rt} })
	return cfg
}

type wireTransport struct {
	w    *Wire
	next http.RoundTripper
}

func (t *wireTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	return t.w.roundTrip(t.next, req)
}

// CancelRequest passes on the legacy cancellation that http.Client uses
// for its Timeout (client-go warns if a wrapper drops it).
func (t *wireTransport) CancelRequest(req *http.Request) {
	if c, ok := t.next.(interface{ CancelRequest(*http.Request) }); ok {
		c.CancelRequest(req)
	}
}

// WrappedRoundTripper lets client-go see through the wrapper.
func (t *wireTransport) WrappedRoundTripper() http.RoundTripper { return t.next }

// SetBefore makes f run before each request is sent, with the call filled
// in (not Sent, Done or Status); a response it returns goes to the client
// instead of the request going out. nil: none.
func (w *Wire) SetBefore(f func(c Call, req *http.Request) *http.Response) {
	w.mu.Lock()
	w.before = f
	w.mu.Unlock()
}

func (w *Wire) roundTrip(rt http.RoundTripper, req *http.Request) (*http.Response, error) {
	c := classify(req)
	if req.Body != nil && (req.Method == http.MethodPut || req.Method == http.MethodPost) {
		body, err := io.ReadAll(req.Body)
		_ = req.Body.Close()
		if err != nil {
			return nil, err
		}
		req = req.Clone(req.Context())
		req.Body = io.NopCloser(bytes.NewReader(body))
		req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
		var lease coordinationv1.Lease
		if c.Resource == "leases" && json.Unmarshal(body, &lease) == nil {
			c.HasBody = true
			if lease.Spec.HolderIdentity != nil {
				c.Holder = *lease.Spec.HolderIdentity
			}
		}
	}
	w.mu.Lock()
	before := w.before
	w.mu.Unlock()
	var resp *http.Response
	var err error
	if before != nil {
		resp = before(c, req)
	}
	if resp == nil && c.Verb == "watch" {
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
	if resp == nil {
		resp, err = rt.RoundTrip(req)
	}
	c.Done = time.Now()
	c.Err = err
	if resp != nil {
		c.Status = resp.StatusCode
		switch {
		case resp.StatusCode == http.StatusGone:
			w.mu.Lock()
			w.gones = append(w.gones, Gone{RV: c.RV, At: c.Done})
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

// classify names a request's verb the way the API server's authorizer does.
func classify(req *http.Request) Call {
	c := Call{Verb: "other"}
	q := req.URL.Query()
	c.RV = q.Get("resourceVersion")
	parts := strings.Split(strings.Trim(req.URL.Path, "/"), "/")
	// .../namespaces/<ns>/<resource>[/<name>]
	for i := 0; i+1 < len(parts); i++ {
		if parts[i] == "namespaces" && i+2 < len(parts) {
			c.Resource = parts[i+2]
			if i+3 < len(parts) {
				c.Name = parts[i+3]
			}
			break
		}
	}
	if c.Resource == "" && len(parts) > 0 {
		c.Resource = parts[len(parts)-1]
	}
	switch req.Method {
	case http.MethodGet:
		switch {
		case q.Get("watch") == "true" || q.Get("watch") == "1":
			c.Verb = "watch"
		case c.Name != "":
			c.Verb = "get"
		default:
			c.Verb = "list"
		}
	case http.MethodPost:
		c.Verb = "create"
	case http.MethodPut:
		c.Verb = "update"
	case http.MethodPatch:
		c.Verb = "patch"
	case http.MethodDelete:
		c.Verb = "delete"
	}
	return c
}

// All returns a copy of the calls recorded so far.
func (w *Wire) All() []Call {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]Call(nil), w.calls...)
}

// Count returns how many calls to leases with verb were sent at or after
// since and match f (nil: all).
func (w *Wire) Count(verb string, since time.Time, f func(Call) bool) int {
	n := 0
	for _, c := range w.All() {
		if c.Resource == "leases" && c.Verb == verb && !c.Sent.Before(since) && (f == nil || f(c)) {
			n++
		}
	}
	return n
}

// Verbs counts the calls to leases since a time by verb, and the failed
// ones by verb and status, as "update!Forbidden".
func (w *Wire) Verbs(since time.Time) map[string]int {
	m := map[string]int{}
	for _, c := range w.All() {
		if c.Resource == "leases" && !c.Sent.Before(since) {
			m[c.Verb]++
			if !c.OK() {
				m[c.Verb+"!"+http.StatusText(c.Status)]++
			}
		}
	}
	return m
}

// Gones returns the 410 Gone answers seen so far.
func (w *Wire) Gones() []Gone {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]Gone(nil), w.gones...)
}

// Events returns how many watch events (of any type) the client received.
func (w *Wire) Events() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.events
}

// WatchBytes returns how many bytes the client read from its watch
// streams: the events (and bookmarks) it received.
func (w *Wire) WatchBytes() int64 { return w.watchBytes.Load() }

// HoldWatches makes new watch requests wait until ReleaseWatches.
func (w *Wire) HoldWatches() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.gate == nil {
		w.gate = make(chan struct{})
		w.held = nil
	}
}

// ReleaseWatches lets held watch requests through and returns the
// resourceVersions they asked for.
func (w *Wire) ReleaseWatches() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.gate != nil {
		close(w.gate)
		w.gate = nil
	}
	return append([]string(nil), w.held...)
}

// HeldRVs returns the resourceVersions of the watch requests held so far.
func (w *Wire) HeldRVs() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.held...)
}

// CutWatches ends every open watch stream as if the server had closed it
// cleanly (the client reads io.EOF, which client-go's watch decoder takes
// for a normal end of stream, so the client resumes), and returns how many
// it ended.
func (w *Wire) CutWatches() int {
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

// watchBody reads a JSON watch stream on the client's behalf, one event
// a line: it counts the bytes and the events, notes ERROR events with code
// 410, and can be cut.
type watchBody struct {
	io.ReadCloser
	w    *Wire
	rv   string
	line bytes.Buffer // what was read of the current line

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
	b.w.watchBytes.Add(int64(n))
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
			b.w.gones = append(b.w.gones, Gone{RV: b.rv, At: time.Now(), Event: true, Reason: ev.Object.Reason, Message: ev.Object.Message})
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
	_ = b.ReadCloser.Close() // unblocks a pending Read
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
