package sim

import (
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
)

// evKind is the kind of a history entry.
type evKind uint8

const (
	evOp        evKind = iota // an operation or fault of the plan
	evRequest                 // a request of a candidate and its answer
	evWatch                   // a watch event delivered to a candidate
	evWork                    // a work started or ended
	evRun                     // Run started or returned, Yield called or answered
	evLog                     // a line of an elector's log
	evViolation               // an invariant failed
)

// entry is one line of the history. Its fields are kept raw and formatted
// only when the history is written, so that recording stays cheap.
type entry struct {
	at   time.Duration
	kind evKind
	who  string
	what string // verb, event type, log message
	// For requests and watch events: the Lease's holder and
	// resourceVersion as answered, or the error.
	holder, rv string
	err        error
	kv         []any // log key/values
}

func (e entry) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%-12s %-6s ", fmtDur(e.at), e.who)
	switch e.kind {
	case evOp:
		b.WriteString("** " + e.what)
	case evRequest:
		fmt.Fprintf(&b, "%s", e.what)
		if e.err != nil {
			fmt.Fprintf(&b, " -> error: %v", e.err)
		} else if e.rv != "" {
			fmt.Fprintf(&b, " -> holder=%q rv=%s", e.holder, e.rv)
		} else {
			b.WriteString(" -> ok")
		}
	case evWatch:
		fmt.Fprintf(&b, "watch %s", e.what)
		if e.rv != "" {
			fmt.Fprintf(&b, " holder=%q rv=%s", e.holder, e.rv)
		}
	case evWork, evRun:
		b.WriteString(e.what)
		if e.err != nil {
			fmt.Fprintf(&b, ": %v", e.err)
		}
	case evLog:
		fmt.Fprintf(&b, "log: %s", e.what)
		if e.err != nil {
			fmt.Fprintf(&b, " err=%q", e.err.Error())
		}
		for i := 0; i+1 < len(e.kv); i += 2 {
			k := fmt.Sprint(e.kv[i])
			if k == "lease" || k == "identity" {
				continue
			}
			fmt.Fprintf(&b, " %s=%v", k, e.kv[i+1])
		}
	case evViolation:
		b.WriteString("!! VIOLATION " + e.what)
	}
	return b.String()
}

// history is the world's event log, safe for concurrent use.
type history struct {
	start time.Time
	mu    sync.Mutex
	ents  []entry
}

// maxEntries bounds a history; older entries other than operations and
// violations are dropped beyond it.
const maxEntries = 400_000

func (h *history) add(e entry) {
	e.at = time.Since(h.start)
	h.mu.Lock()
	h.ents = append(h.ents, e)
	if len(h.ents) > maxEntries {
		kept := h.ents[:0]
		for i, x := range h.ents {
			if i >= maxEntries/2 || x.kind == evOp || x.kind == evViolation {
				kept = append(kept, x)
			}
		}
		h.ents = kept
	}
	h.mu.Unlock()
}

func (h *history) entries() []entry {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]entry(nil), h.ents...)
}

// write writes the entries between from and to (virtual, since the
// start) to w, with the plan's operations outside the window too.
func writeHistory(w io.Writer, ents []entry, from, to time.Duration) {
	for _, e := range ents {
		if (e.at >= from && e.at <= to) || e.kind == evOp || e.kind == evViolation {
			fmt.Fprintln(w, e.String())
		}
	}
}

// logSink records an elector's log lines (up to V(2)) in the history.
type logSink struct {
	h   *history
	who string
	kv  []any
}

var _ logr.LogSink = (*logSink)(nil)

func (s *logSink) Init(logr.RuntimeInfo)  {}
func (s *logSink) Enabled(level int) bool { return level <= 2 }
func (s *logSink) Info(_ int, msg string, kv ...any) {
	s.h.add(entry{kind: evLog, who: s.who, what: msg, kv: append(s.kv[:len(s.kv):len(s.kv)], kv...)})
}
func (s *logSink) Error(err error, msg string, kv ...any) {
	s.h.add(entry{kind: evLog, who: s.who, what: "ERROR " + msg, err: err, kv: append(s.kv[:len(s.kv):len(s.kv)], kv...)})
}
func (s *logSink) WithValues(kv ...any) logr.LogSink {
	return &logSink{h: s.h, who: s.who, kv: append(s.kv[:len(s.kv):len(s.kv)], kv...)}
}
func (s *logSink) WithName(string) logr.LogSink { return s }

// recent summarizes the last n requests of who, newest last, in full and
// as a signature of verbs and answers ("update:404 get:404").
func (h *history) recent(who string, n int) (text, sig string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out, sigs []string
	for i := len(h.ents) - 1; i >= 0 && len(out) < n; i-- {
		e := h.ents[i]
		if e.kind != evRequest || e.who != who || strings.HasPrefix(e.what, " ") {
			continue
		}
		s := e.what + " -> "
		answer := "ok"
		switch {
		case e.err != nil:
			s += shortErr(e.err)
			answer = shortErr(e.err)
			if statusOf(e.err) == 0 {
				answer = "error"
			}
		case e.rv != "":
			s += "holder=" + strconv.Quote(e.holder) + " rv=" + e.rv
		default:
			s += "ok"
		}
		out = append(out, s)
		if verb, _, _ := strings.Cut(e.what, " "); verb != "watch" {
			sigs = append(sigs, verb+":"+answer)
		}
	}
	slices.Reverse(out)
	slices.Reverse(sigs)
	return strings.Join(out, "; "), strings.Join(sigs, " ")
}

// shortErr names an error by its status code, or its text.
func shortErr(err error) string {
	if code := statusOf(err); code != 0 {
		return strconv.Itoa(code)
	}
	return err.Error()
}
