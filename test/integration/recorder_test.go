package integration

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

// call is one HTTP request a client made, as the recorder saw it.
type call struct {
	// Verb is get, list, watch, create, update, delete or other.
	Verb string
	// Resource is the last resource segment of the path ("leases"), Name
	// the object's name if the path has one.
	Resource, Name string
	// RV is the resourceVersion query parameter (watch, list, get).
	RV string
	// Holder is the holderIdentity in a create or update body, and
	// HasBody says the body was decoded.
	Holder  string
	HasBody bool
	// Sent is when the request was handed to the transport, Done when its
	// response headers (or error) came back.
	Sent, Done time.Time
	Status     int
	Err        error
}

func (c call) ok() bool { return c.Err == nil && c.Status >= 200 && c.Status < 300 }

// recorder is a rest.Config.WrapTransport that records every request of a
// client, lets a test act just before a request is sent (to race another
// writer against it, or to answer it itself), and can cut open watches.
type recorder struct {
	mu    sync.Mutex
	calls []call
	// before, if set, runs before each request is sent, with the call
	// filled in (not Sent/Done/Status). A non-nil response is returned
	// to the client instead of sending the request.
	before  func(c call, req *http.Request) *http.Response
	watches []*cuttableBody
	// watchBytes counts the bytes read from all watch streams: events
	// (and bookmarks) the client received.
	watchBytes atomic.Int64
}

// wrap installs the recorder on a copy of cfg.
func (r *recorder) wrap(cfg *rest.Config) *rest.Config {
	cfg = rest.CopyConfig(cfg)
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper { return &recordingTransport{r: r, next: rt} })
	return cfg
}

type recordingTransport struct {
	r    *recorder
	next http.RoundTripper
}

func (t *recordingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	return t.r.roundTrip(t.next, req)
}

// CancelRequest passes on the legacy cancellation that http.Client uses
// for its Timeout (client-go warns if a wrapper drops it).
func (t *recordingTransport) CancelRequest(req *http.Request) {
	if c, ok := t.next.(interface{ CancelRequest(*http.Request) }); ok {
		c.CancelRequest(req)
	}
}

// WrappedRoundTripper lets client-go see through the wrapper.
func (t *recordingTransport) WrappedRoundTripper() http.RoundTripper { return t.next }

func (r *recorder) setBefore(f func(c call, req *http.Request) *http.Response) {
	r.mu.Lock()
	r.before = f
	r.mu.Unlock()
}

func (r *recorder) roundTrip(rt http.RoundTripper, req *http.Request) (*http.Response, error) {
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
	r.mu.Lock()
	before := r.before
	r.mu.Unlock()
	var resp *http.Response
	var err error
	if before != nil {
		resp = before(c, req)
	}
	c.Sent = time.Now()
	if resp == nil {
		resp, err = rt.RoundTrip(req)
	}
	c.Done = time.Now()
	c.Err = err
	if resp != nil {
		c.Status = resp.StatusCode
		if c.Verb == "watch" && resp.StatusCode == http.StatusOK {
			b := &cuttableBody{ReadCloser: resp.Body, counter: &r.watchBytes}
			resp.Body = b
			r.mu.Lock()
			r.watches = append(r.watches, b)
			r.mu.Unlock()
		}
	}
	r.mu.Lock()
	r.calls = append(r.calls, c)
	r.mu.Unlock()
	return resp, err
}

// classify names a request's verb the way the API server's authorizer does.
func classify(req *http.Request) call {
	c := call{Verb: "other"}
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

// all returns a copy of the calls recorded so far.
func (r *recorder) all() []call {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]call(nil), r.calls...)
}

// count returns how many lease calls with verb were sent at or after since
// and matched filter (nil: all).
func (r *recorder) count(verb string, since time.Time, filter func(call) bool) int {
	n := 0
	for _, c := range r.all() {
		if c.Resource == "leases" && c.Verb == verb && !c.Sent.Before(since) && (filter == nil || filter(c)) {
			n++
		}
	}
	return n
}

// verbs summarises the lease calls since a time, e.g. "get=1 watch=2(403)".
func (r *recorder) verbs(since time.Time) map[string]int {
	m := map[string]int{}
	for _, c := range r.all() {
		if c.Resource == "leases" && !c.Sent.Before(since) {
			m[c.Verb]++
			if !c.ok() {
				m[c.Verb+"!"+http.StatusText(c.Status)]++
			}
		}
	}
	return m
}

// cutWatches ends every open watch stream as if the server had closed it
// cleanly: the client reads io.EOF.
func (r *recorder) cutWatches() int {
	r.mu.Lock()
	ws := r.watches
	r.watches = nil
	r.mu.Unlock()
	n := 0
	for _, w := range ws {
		if w.cut() {
			n++
		}
	}
	return n
}

// cuttableBody is a watch response body that a test can end. After cut,
// Read returns io.EOF, which client-go's watch decoder treats as a normal
// end of stream (the server closing the watch), so the client resumes.
type cuttableBody struct {
	io.ReadCloser
	counter *atomic.Int64
	mu      sync.Mutex
	isCut   bool
	closed  bool
}

func (b *cuttableBody) cut() bool {
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

func (b *cuttableBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.mu.Lock()
	isCut := b.isCut
	b.mu.Unlock()
	if isCut {
		return 0, io.EOF
	}
	b.counter.Add(int64(n))
	return n, err
}

func (b *cuttableBody) Close() error {
	b.mu.Lock()
	already := b.closed || b.isCut
	b.closed = true
	b.mu.Unlock()
	if already {
		return nil
	}
	return b.ReadCloser.Close()
}

// errorEventResponse is a watch response that carries one ERROR event with
// the given Status and then ends, byte for byte what kube-apiserver sends
// when a watch's resourceVersion is too old.
func errorEventResponse(req *http.Request, code int, reason, message string) *http.Response {
	ev := map[string]any{
		"type": "ERROR",
		"object": map[string]any{
			"kind": "Status", "apiVersion": "v1", "metadata": map[string]any{},
			"status": "Failure", "message": message, "reason": reason, "code": code,
		},
	}
	b, err := json.Marshal(ev)
	if err != nil {
		panic(err)
	}
	b = append(b, '\n')
	return &http.Response{
		Status:        "200 OK",
		StatusCode:    http.StatusOK,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        http.Header{"Content-Type": []string{"application/json"}},
		Body:          io.NopCloser(bytes.NewReader(b)),
		ContentLength: int64(len(b)),
		Request:       req,
	}
}
