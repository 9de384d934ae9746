package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/client-go/rest"

	"github.com/leasehold/leasehold/test/internal/sleep"
)

// ProxyMode is the fault a Proxy injects while it is set.
type ProxyMode int

const (
	// Healthy forwards everything.
	Healthy ProxyMode = iota
	// Latency delays each request by ReqDelay before forwarding and its
	// response by RespDelay after the API server answered (so a write
	// lands, but its answer comes late or, past the client's timeout,
	// never).
	Latency
	// Status answers every request with Code (5xx or 429) without
	// forwarding it.
	Status
	// StallWatches holds every watch response: no event reaches the
	// client until healed (the API server's events queue up).
	StallWatches
	// Reset closes every connection with a TCP RST, and resets each new
	// request's connection.
	Reset
	// Partition cuts the client off: requests hang (not forwarded) and
	// responses in flight are held, until healed or the client gives up.
	Partition
)

func (m ProxyMode) String() string {
	return [...]string{"healthy", "latency", "status", "stall-watches", "reset", "partition"}[m]
}

// proxyFault is a mode with its parameters.
type proxyFault struct {
	mode      ProxyMode
	reqDelay  time.Duration
	respDelay time.Duration
	code      int
}

// ProxyStats counts what a proxy did.
type ProxyStats struct {
	Requests, Watches, Injected, Resets, Held, DroppedWatches atomic.Int64
	// WatchTime is the total time watches stayed open, in nanoseconds.
	WatchTime atomic.Int64
	// Gone counts the real 410 Gone answers the API server sent the
	// candidate: an HTTP 410, or an ERROR event with code 410 in a watch
	// stream (the candidate speaks JSON, so the proxy reads them).
	Gone atomic.Int64
	// WatchErrors counts the ERROR events of every code in watch streams.
	WatchErrors atomic.Int64
	// Moves counts the moves to another kube-apiserver.
	Moves atomic.Int64
}

// Upstream is one kube-apiserver that proxies forward to. Its watch
// streams can be made to lag, as a server whose watch cache falls behind.
type Upstream struct {
	Name   string
	target *url.URL
	rt     http.RoundTripper
	lag    atomic.Int64 // nanoseconds added to each watch event
}

// NewUpstream returns an upstream reached with cfg (admin credentials).
func NewUpstream(name string, cfg *rest.Config) (*Upstream, error) {
	target, err := url.Parse(cfg.Host)
	if err != nil {
		return nil, err
	}
	if target.Scheme == "" {
		target.Scheme = "https"
	}
	rt, err := rest.TransportFor(cfg)
	if err != nil {
		return nil, err
	}
	return &Upstream{Name: name, target: target, rt: rt}, nil
}

// SetWatchLag delays every watch event this server sends, on open and
// new watches, by d (0 ends the lag); the order of events is kept.
func (u *Upstream) SetWatchLag(d time.Duration) { u.lag.Store(int64(d)) }

// WatchLag returns the current lag.
func (u *Upstream) WatchLag() time.Duration { return time.Duration(u.lag.Load()) }

// Proxy is a fault-injecting reverse proxy in front of kube-apiserver for
// one candidate: it serves plain HTTP on 127.0.0.1 and forwards over TLS
// with the admin credentials, to one of its upstreams at a time.
type Proxy struct {
	Name  string
	URL   string // http://127.0.0.1:port
	Stats ProxyStats

	srv       *http.Server
	upstreams []*Upstream
	rps       []*httputil.ReverseProxy

	mu      sync.Mutex
	up      int // the upstream in use
	fault   proxyFault
	healed  chan struct{} // closed when the current fault is healed
	conns   map[net.Conn]struct{}
	watches map[*watchEntry]struct{}
}

type watchEntry struct{ cancel context.CancelFunc }

// NewProxy starts a proxy to the API server of admin.
func NewProxy(name string, admin *rest.Config) (*Proxy, error) {
	u, err := NewUpstream("kube-apiserver", admin)
	if err != nil {
		return nil, err
	}
	return NewProxyTo(name, []*Upstream{u}, 0)
}

// NewProxyTo starts a proxy that forwards to upstreams[first] until
// moved with SetUpstream.
func NewProxyTo(name string, upstreams []*Upstream, first int) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{
		Name:      name,
		URL:       "http://" + ln.Addr().String(),
		upstreams: upstreams,
		up:        first,
		healed:    make(chan struct{}),
		conns:     map[net.Conn]struct{}{},
		watches:   map[*watchEntry]struct{}{},
	}
	for _, u := range upstreams {
		p.rps = append(p.rps, &httputil.ReverseProxy{
			Rewrite: func(r *httputil.ProxyRequest) {
				r.SetURL(u.target)
				r.Out.Host = u.target.Host
			},
			Transport:      u.rt,
			FlushInterval:  -1,
			ErrorLog:       log.New(io.Discard, "", 0),
			ModifyResponse: p.modifyResponse,
			ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
				w.WriteHeader(http.StatusBadGateway)
			},
		})
	}
	p.srv = &http.Server{
		Handler:   p,
		ConnState: p.connState,
		ErrorLog:  log.New(io.Discard, "", 0),
	}
	go func() { _ = p.srv.Serve(ln) }()
	return p, nil
}

// Close stops the proxy and closes every connection.
func (p *Proxy) Close() {
	p.Heal()
	_ = p.srv.Close()
}

// Upstream returns the index of the upstream in use.
func (p *Proxy) Upstream() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.up
}

// SetUpstream moves the candidate to upstreams[i], as a load balancer
// failing over does: every open connection is reset, and new requests go
// to the new server.
func (p *Proxy) SetUpstream(i int) {
	p.mu.Lock()
	p.up = i
	p.mu.Unlock()
	p.Stats.Moves.Add(1)
	p.ResetConnections()
}

// Set starts injecting a fault (replacing any other).
func (p *Proxy) set(f proxyFault) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fault.mode != Healthy {
		close(p.healed)
		p.healed = make(chan struct{})
	}
	p.fault = f
}

// SetLatency delays requests and responses.
func (p *Proxy) SetLatency(req, resp time.Duration) {
	p.set(proxyFault{mode: Latency, reqDelay: req, respDelay: resp})
}

// SetStatus answers every request with code.
func (p *Proxy) SetStatus(code int) { p.set(proxyFault{mode: Status, code: code}) }

// StallWatches holds watch responses until healed.
func (p *Proxy) StallWatches() { p.set(proxyFault{mode: StallWatches}) }

// SetPartition cuts the candidate off until healed.
func (p *Proxy) SetPartition() { p.set(proxyFault{mode: Partition}) }

// SetReset resets every open connection now, and every new one until
// healed.
func (p *Proxy) SetReset() {
	p.set(proxyFault{mode: Reset})
	p.ResetConnections()
}

// Heal ends the current fault; held requests and responses proceed.
func (p *Proxy) Heal() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fault.mode != Healthy {
		close(p.healed)
		p.healed = make(chan struct{})
	}
	p.fault = proxyFault{}
}

// DropWatches ends every open watch at once (the client sees the stream
// break and must re-establish it).
func (p *Proxy) DropWatches() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	for w := range p.watches {
		w.cancel()
	}
	n := len(p.watches)
	p.Stats.DroppedWatches.Add(int64(n))
	return n
}

// ResetConnections closes every client connection with a TCP RST.
func (p *Proxy) ResetConnections() int {
	p.mu.Lock()
	conns := make([]net.Conn, 0, len(p.conns))
	for c := range p.conns {
		conns = append(conns, c)
	}
	p.mu.Unlock()
	for _, c := range conns {
		reset(c)
	}
	p.Stats.Resets.Add(int64(len(conns)))
	return len(conns)
}

func reset(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}

func (p *Proxy) current() (proxyFault, chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.fault, p.healed
}

func (p *Proxy) connState(c net.Conn, s http.ConnState) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch s {
	case http.StateNew:
		p.conns[c] = struct{}{}
	case http.StateClosed, http.StateHijacked:
		delete(p.conns, c)
	}
}

func isWatch(r *http.Request) bool {
	w := r.URL.Query().Get("watch")
	return w == "true" || w == "1"
}

// ServeHTTP applies the current fault, then forwards.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.Stats.Requests.Add(1)
	watch := isWatch(r)
	f, healed := p.current()
	switch f.mode {
	case Partition:
		p.Stats.Held.Add(1)
		// Not forwarded until healed; a client that gives up first
		// never reaches the API server, like a lost packet.
		select {
		case <-healed:
		case <-r.Context().Done():
			return
		}
	case Status:
		p.Stats.Injected.Add(1)
		writeStatus(w, f.code)
		return
	case Reset:
		p.Stats.Resets.Add(1)
		if hj, ok := w.(http.Hijacker); ok {
			if c, _, err := hj.Hijack(); err == nil {
				reset(c)
				return
			}
		}
		panic(http.ErrAbortHandler)
	case Latency:
		if f.reqDelay > 0 {
			p.Stats.Held.Add(1)
			if sleep.For(r.Context(), f.reqDelay) != nil {
				return
			}
		}
	}

	p.mu.Lock()
	up := p.up
	p.mu.Unlock()
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	var out http.ResponseWriter = &gatedWriter{ResponseWriter: w, p: p, watch: watch, ctx: ctx}
	if watch {
		p.Stats.Watches.Add(1)
		e := &watchEntry{cancel: cancel}
		p.mu.Lock()
		p.watches[e] = struct{}{}
		p.mu.Unlock()
		opened := time.Now()
		defer func() {
			p.Stats.WatchTime.Add(int64(time.Since(opened)))
			p.mu.Lock()
			delete(p.watches, e)
			p.mu.Unlock()
		}()
	}
	if watch {
		lw := newLagWriter(out, p, p.upstreams[up], ctx)
		defer lw.finish()
		out = lw
	}
	p.rps[up].ServeHTTP(out, r.WithContext(ctx))
}

// modifyResponse counts a 410 and holds a response (already answered by
// the API server) while a latency fault is set.
func (p *Proxy) modifyResponse(resp *http.Response) error {
	if resp.StatusCode == http.StatusGone {
		p.Stats.Gone.Add(1)
	}
	f, _ := p.current()
	if f.mode == Latency && f.respDelay > 0 {
		if sleep.For(resp.Request.Context(), f.respDelay) != nil {
			return errors.New("chaos: client gave up during response latency")
		}
	}
	return nil
}

// writeStatus answers with a Kubernetes Status of the given code.
func writeStatus(w http.ResponseWriter, code int) {
	reason := "InternalError"
	switch code {
	case http.StatusTooManyRequests:
		reason = "TooManyRequests"
		w.Header().Set("Retry-After", "1")
	case http.StatusServiceUnavailable:
		reason = "ServiceUnavailable"
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	fmt.Fprintf(w, `{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"chaos: injected %d","reason":%q,"code":%d}`, code, reason, code)
}

// gatedWriter holds writes to the client while the proxy stalls them:
// all responses during a partition, watch responses while watches stall.
type gatedWriter struct {
	http.ResponseWriter
	p     *Proxy
	watch bool
	ctx   context.Context
}

func (g *gatedWriter) gate() error {
	for {
		f, healed := g.p.current()
		if f.mode != Partition && !(f.mode == StallWatches && g.watch) {
			return nil
		}
		select {
		case <-healed:
		case <-g.ctx.Done():
			return g.ctx.Err()
		}
	}
}

func (g *gatedWriter) WriteHeader(code int) {
	if g.gate() == nil {
		g.ResponseWriter.WriteHeader(code)
	}
}

func (g *gatedWriter) Write(b []byte) (int, error) {
	if err := g.gate(); err != nil {
		return 0, err
	}
	return g.ResponseWriter.Write(b)
}

func (g *gatedWriter) Flush() {
	if g.gate() == nil {
		if f, ok := g.ResponseWriter.(http.Flusher); ok {
			f.Flush()
		}
	}
}

// lagWriter carries a watch stream to the client through a delay line:
// each chunk goes out the upstream's current lag after it came in, in
// order, and flushed. With no lag it goes at once. It also reads the JSON
// events and counts ERROR events and 410s.
type lagWriter struct {
	out  http.ResponseWriter
	p    *Proxy
	up   *Upstream
	ctx  context.Context
	line []byte

	ch   chan lagChunk
	done chan struct{}
}

type lagChunk struct {
	at time.Time
	b  []byte
}

func newLagWriter(out http.ResponseWriter, p *Proxy, up *Upstream, ctx context.Context) *lagWriter {
	l := &lagWriter{out: out, p: p, up: up, ctx: ctx, ch: make(chan lagChunk, 1024), done: make(chan struct{})}
	go l.deliver()
	return l
}

func (l *lagWriter) Header() http.Header { return l.out.Header() }

// WriteHeader goes at once: a lagging server answers the request, its
// events come late.
func (l *lagWriter) WriteHeader(code int) { l.out.WriteHeader(code) }

func (l *lagWriter) Write(b []byte) (int, error) {
	l.scan(b)
	select {
	case l.ch <- lagChunk{at: time.Now(), b: append([]byte(nil), b...)}:
		return len(b), nil
	case <-l.ctx.Done():
		return 0, l.ctx.Err()
	}
}

// Flush is done by deliver, after each chunk.
func (l *lagWriter) Flush() {}

func (l *lagWriter) deliver() {
	defer close(l.done)
	for c := range l.ch {
		if d := time.Until(c.at.Add(l.up.WatchLag())); d > 0 && sleep.For(l.ctx, d) != nil {
			continue // the client is gone: drop the rest
		}
		if l.ctx.Err() != nil {
			continue
		}
		if _, err := l.out.Write(c.b); err == nil {
			if f, ok := l.out.(http.Flusher); ok {
				f.Flush()
			}
		}
	}
}

// finish waits until everything written has been delivered (or the
// client has gone).
func (l *lagWriter) finish() {
	close(l.ch)
	<-l.done
}

// scan reads the newline-delimited JSON events of the stream.
func (l *lagWriter) scan(b []byte) {
	l.line = append(l.line, b...)
	for {
		i := bytes.IndexByte(l.line, '\n')
		if i < 0 {
			break
		}
		ln := l.line[:i]
		if bytes.Contains(ln, []byte(`"type":"ERROR"`)) {
			l.p.Stats.WatchErrors.Add(1)
			var ev struct {
				Object struct {
					Code int `json:"code"`
				} `json:"object"`
			}
			if json.Unmarshal(ln, &ev) == nil && ev.Object.Code == http.StatusGone {
				l.p.Stats.Gone.Add(1)
			}
		}
		l.line = l.line[i+1:]
	}
	if len(l.line) > 1<<20 {
		l.line = nil // not JSON lines: stop buffering
	}
}
