package bench

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// errBlackhole is what a crashed candidate's client answers: it sends
// nothing any more.
var errBlackhole = errors.New("bench: client blackholed (simulated crash)")

// Recorder is a rest.Config.WrapTransport that counts one client's requests
// by verb and timestamps the ones the measurements start from: the last
// successful write, and the release (an update that clears the holder).
// It can also blackhole the client, to simulate a crash.
type Recorder struct {
	// TrackRelease decodes update bodies to find the release write.
	TrackRelease bool

	blackhole atomic.Bool

	mu            sync.Mutex
	verbs         map[string]int // requests sent, by verb
	failed        map[string]int // non-2xx answers and transport errors, by verb
	watchesOpened int
	watchesOpen   int
	lastWriteOK   time.Time // when the last 2xx create/update returned
	releaseAt     time.Time // when the last 2xx update clearing the holder returned
	bases         []http.RoundTripper
	writeHook     func(took time.Duration) // called with each 2xx write's round trip
}

// NewRecorder returns an empty Recorder.
func NewRecorder() *Recorder {
	return &Recorder{verbs: map[string]int{}, failed: map[string]int{}}
}

// Counts is a snapshot of a Recorder's counters.
type Counts struct {
	Verbs         map[string]int
	Failed        map[string]int
	WatchesOpened int
	WatchesOpen   int
}

// Total is the number of requests of all verbs.
func (c Counts) Total() int {
	n := 0
	for _, v := range c.Verbs {
		n += v
	}
	return n
}

// Sub returns c - o for the cumulative counters; WatchesOpen stays c's.
func (c Counts) Sub(o Counts) Counts {
	out := Counts{Verbs: map[string]int{}, Failed: map[string]int{}, WatchesOpened: c.WatchesOpened - o.WatchesOpened, WatchesOpen: c.WatchesOpen}
	for k, v := range c.Verbs {
		if d := v - o.Verbs[k]; d != 0 {
			out.Verbs[k] = d
		}
	}
	for k, v := range c.Failed {
		if d := v - o.Failed[k]; d != 0 {
			out.Failed[k] = d
		}
	}
	return out
}

// Add returns c + o (WatchesOpen added too).
func (c Counts) Add(o Counts) Counts {
	out := Counts{Verbs: map[string]int{}, Failed: map[string]int{}, WatchesOpened: c.WatchesOpened + o.WatchesOpened, WatchesOpen: c.WatchesOpen + o.WatchesOpen}
	for _, m := range []map[string]int{c.Verbs, o.Verbs} {
		for k, v := range m {
			out.Verbs[k] += v
		}
	}
	for _, m := range []map[string]int{c.Failed, o.Failed} {
		for k, v := range m {
			out.Failed[k] += v
		}
	}
	return out
}

// Snapshot returns the current counters.
func (r *Recorder) Snapshot() Counts {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := Counts{Verbs: map[string]int{}, Failed: map[string]int{}, WatchesOpened: r.watchesOpened, WatchesOpen: r.watchesOpen}
	for k, v := range r.verbs {
		c.Verbs[k] = v
	}
	for k, v := range r.failed {
		c.Failed[k] = v
	}
	return c
}

// WatchesOpen is the number of watch streams open now.
func (r *Recorder) WatchesOpen() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.watchesOpen
}

// Requests is the number of requests of verb sent so far.
func (r *Recorder) Requests(verb string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.verbs[verb]
}

// LastWriteOK is when the last successful create or update returned.
func (r *Recorder) LastWriteOK() time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lastWriteOK
}

// ReleaseAt is when the last successful update that cleared the holder
// returned (zero if none; needs TrackRelease).
func (r *Recorder) ReleaseAt() time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.releaseAt
}

func (r *Recorder) setWriteHook(f func(took time.Duration)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.writeHook = f
}

// Blackhole makes every later request fail at once without being sent.
func (r *Recorder) Blackhole() { r.blackhole.Store(true) }

// Wrap is the rest.Config.WrapTransport function.
func (r *Recorder) Wrap(rt http.RoundTripper) http.RoundTripper {
	r.mu.Lock()
	r.bases = append(r.bases, rt)
	r.mu.Unlock()
	return &recordingTransport{r: r, next: rt}
}

// CloseIdle closes the idle connections of the wrapped transports.
func (r *Recorder) CloseIdle() {
	r.mu.Lock()
	bases := append([]http.RoundTripper(nil), r.bases...)
	r.mu.Unlock()
	for _, b := range bases {
		if c, ok := b.(interface{ CloseIdleConnections() }); ok {
			c.CloseIdleConnections()
		}
	}
}

type recordingTransport struct {
	r    *Recorder
	next http.RoundTripper
}

// WrappedRoundTripper lets client-go's utilnet helpers see through us.
func (t *recordingTransport) WrappedRoundTripper() http.RoundTripper { return t.next }

func (t *recordingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	r := t.r
	verb := verbOf(req)
	if r.blackhole.Load() {
		return nil, errBlackhole
	}
	release := false
	if verb == "update" && r.TrackRelease {
		release = clearsHolder(req)
	}
	sent := time.Now()
	resp, err := t.next.RoundTrip(req)
	now := time.Now()
	ok := err == nil && resp.StatusCode >= 200 && resp.StatusCode < 300

	r.mu.Lock()
	defer r.mu.Unlock()
	r.verbs[verb]++
	if !ok {
		r.failed[verb]++
		return resp, err
	}
	switch verb {
	case "create", "update":
		r.lastWriteOK = now
		if r.writeHook != nil {
			r.writeHook(now.Sub(sent))
		}
		if release {
			r.releaseAt = now
		}
	case "watch":
		r.watchesOpened++
		r.watchesOpen++
		resp.Body = &watchBody{ReadCloser: resp.Body, r: r}
	}
	return resp, err
}

// watchBody decrements the open-watch gauge once when the stream closes.
type watchBody struct {
	io.ReadCloser
	r    *Recorder
	once sync.Once
}

func (b *watchBody) Close() error {
	b.once.Do(func() {
		b.r.mu.Lock()
		b.r.watchesOpen--
		b.r.mu.Unlock()
	})
	return b.ReadCloser.Close()
}

// verbOf names a request the way the API server's audit log does.
func verbOf(req *http.Request) string {
	q := req.URL.Query()
	switch req.Method {
	case http.MethodGet:
		if w := q.Get("watch"); w == "true" || w == "1" || strings.Contains(req.URL.Path, "/watch/") {
			return "watch"
		}
		if strings.Contains(req.URL.Path, "/leases/") {
			return "get"
		}
		return "list"
	case http.MethodPost:
		return "create"
	case http.MethodPut:
		return "update"
	case http.MethodPatch:
		return "patch"
	case http.MethodDelete:
		return "delete"
	}
	return "other"
}

// clearsHolder reports whether an update's JSON body has no holder: a
// release (leasehold omits holderIdentity, client-go writes "").
func clearsHolder(req *http.Request) bool {
	if req.GetBody == nil {
		return false
	}
	body, err := req.GetBody()
	if err != nil {
		return false
	}
	defer body.Close()
	var lease struct {
		Spec struct {
			HolderIdentity *string `json:"holderIdentity"`
		} `json:"spec"`
	}
	if err := json.NewDecoder(body).Decode(&lease); err != nil {
		return false
	}
	return lease.Spec.HolderIdentity == nil || *lease.Spec.HolderIdentity == ""
}

// clientFor returns a clientset for admin's credentials whose requests go
// through rec. With ownConn it gets its own HTTP transport (its own TCP
// connection), as a separate process would; otherwise it shares client-go's
// cached transport. QPS and Burst are high so the client-side rate limiter
// never throttles; bodies are JSON so the recorder can read them.
func clientFor(admin *rest.Config, rec *Recorder, ownConn bool) (kubernetes.Interface, error) {
	cfg := rest.CopyConfig(admin)
	cfg.QPS, cfg.Burst = 5000, 10000
	cfg.ContentType = "application/json"
	cfg.AcceptContentTypes = "application/json"
	cfg.Timeout = 0
	if ownConn {
		// A Proxy func makes the config uncacheable in client-go's
		// transport cache: a fresh transport, never shared.
		cfg.Proxy = func(*http.Request) (*url.URL, error) { return nil, nil }
	}
	cfg.WrapTransport = rec.Wrap
	return kubernetes.NewForConfig(cfg)
}
