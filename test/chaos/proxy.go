package chaos

import (
	"context"
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
}

// Proxy is a fault-injecting reverse proxy in front of kube-apiserver for
// one candidate: it serves plain HTTP on 127.0.0.1 and forwards over TLS
// with the admin credentials.
type Proxy struct {
	Name  string
	URL   string // http://127.0.0.1:port
	Stats ProxyStats

	srv *http.Server
	rp  *httputil.ReverseProxy

	mu      sync.Mutex
	fault   proxyFault
	healed  chan struct{} // closed when the current fault is healed
	conns   map[net.Conn]struct{}
	watches map[*watchEntry]struct{}
}

type watchEntry struct{ cancel context.CancelFunc }

// NewProxy starts a proxy to the API server of admin.
func NewProxy(name string, admin *rest.Config) (*Proxy, error) {
	target, err := url.Parse(admin.Host)
	if err != nil {
		return nil, err
	}
	if target.Scheme == "" {
		target.Scheme = "https"
	}
	rt, err := rest.TransportFor(admin)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{
		Name:    name,
		URL:     "http://" + ln.Addr().String(),
		healed:  make(chan struct{}),
		conns:   map[net.Conn]struct{}{},
		watches: map[*watchEntry]struct{}{},
	}
	p.rp = &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(target)
			r.Out.Host = target.Host
		},
		Transport:      rt,
		FlushInterval:  -1,
		ErrorLog:       log.New(io.Discard, "", 0),
		ModifyResponse: p.delayResponse,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			w.WriteHeader(http.StatusBadGateway)
		},
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
			if !sleepCtx(r.Context(), f.reqDelay) {
				return
			}
		}
	}

	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
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
	p.rp.ServeHTTP(&gatedWriter{ResponseWriter: w, p: p, watch: watch, ctx: ctx}, r.WithContext(ctx))
}

// delayResponse holds a response (already answered by the API server)
// while a latency fault is set.
func (p *Proxy) delayResponse(resp *http.Response) error {
	f, _ := p.current()
	if f.mode == Latency && f.respDelay > 0 {
		if !sleepCtx(resp.Request.Context(), f.respDelay) {
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

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
