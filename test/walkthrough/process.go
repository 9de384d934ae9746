// Package walkthrough runs the leader-election walk-through of docs/demo.md
// with real processes: it builds examples/leader-election, starts copies of it
// against a real API server, parses their machine-readable stdout into one
// timeline, and signals them (SIGINT, SIGKILL, SIGSTOP, SIGCONT).
//
// The demo (test/cmd/demo), the walk-through test and the chaos harness
// (test/chaos) share it.
package walkthrough

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// RepoRoot returns the root of the leasehold repository: the first
// directory above the working directory that holds examples/go.mod and
// go.mod.
func RepoRoot() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for dir := wd; ; {
		if exists(filepath.Join(dir, "go.mod")) && exists(filepath.Join(dir, "examples", "go.mod")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("walkthrough: no leasehold repository root above %s", wd)
		}
		dir = parent
	}
}

// Build runs `go build -o out pkg` in moduleDir and returns out.
func Build(moduleDir, pkg, out string) (string, error) {
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Dir = moduleDir
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("walkthrough: go build %s in %s: %w\n%s", pkg, moduleDir, err, b)
	}
	return out, nil
}

// BuildExample builds examples/leader-election into dir and returns the
// path of the binary.
func BuildExample(dir string) (string, error) {
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	return Build(filepath.Join(root, "examples"), "./leader-election", filepath.Join(dir, "leader-election"))
}

// Event is one machine-readable stdout line of a process:
//
//	<KIND> <fields...> <unix-nanos>
type Event struct {
	Kind   string    // LEADING, STOPPED, NEWLEADER, EXIT, START, END, ...
	Fields []string  // the fields between the kind and the time
	At     time.Time // the time the process wrote in the line (its wall clock)
	// Recv is when the driver read the line, on the driver's own clock:
	// it carries a monotonic reading, like the driver's other time stamps
	// (signals, kills), so durations between them cannot be skewed by a
	// wall-clock step. It is later than the event by the pipe's delivery
	// lag (Recv's wall time minus At shows it).
	Recv time.Time
	Proc string // the name the process was started under
	Inc  int    // the process's incarnation (restarts of one name)
}

func (e Event) String() string {
	return fmt.Sprintf("%s %s %s", e.Proc, e.Kind, strings.Join(e.Fields, " "))
}

// ParseEvent parses one protocol line. ok is false for anything else.
func ParseEvent(line string) (Event, bool) {
	f := strings.Fields(line)
	if len(f) < 2 {
		return Event{}, false
	}
	ns, err := strconv.ParseInt(f[len(f)-1], 10, 64)
	if err != nil || ns <= 0 {
		return Event{}, false
	}
	for _, r := range f[0] {
		if r < 'A' || r > 'Z' {
			return Event{}, false
		}
	}
	return Event{Kind: f[0], Fields: f[1 : len(f)-1], At: time.Unix(0, ns)}, true
}

// Timeline collects the events of several processes, in arrival order,
// and lets a caller wait for one.
type Timeline struct {
	mu       sync.Mutex
	events   []Event
	problems []string
	changed  chan struct{}
	// OnEvent, if set before any process starts, is called with each event
	// as it arrives (under no lock of the timeline).
	OnEvent func(Event)
}

// NewTimeline returns an empty timeline.
func NewTimeline() *Timeline { return &Timeline{changed: make(chan struct{})} }

// Add appends an event and wakes waiters.
func (t *Timeline) Add(e Event) {
	t.mu.Lock()
	t.events = append(t.events, e)
	close(t.changed)
	t.changed = make(chan struct{})
	t.mu.Unlock()
	if t.OnEvent != nil {
		t.OnEvent(e)
	}
}

// Problem records a stdout line of a process that could not be read as an
// event (see ProcessOptions.Strict).
func (t *Timeline) Problem(format string, args ...any) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.problems = append(t.problems, fmt.Sprintf(format, args...))
}

// Problems returns the stdout lines of strict processes that were lost or
// could not be read, described.
func (t *Timeline) Problems() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]string(nil), t.problems...)
}

// Events returns a copy of all events so far.
func (t *Timeline) Events() []Event {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]Event(nil), t.events...)
}

// WaitFor waits until ctx ends or some event from index `from` on satisfies match, and
// returns it with its index. It fails after timeout.
func (t *Timeline) WaitFor(ctx context.Context, from int, timeout time.Duration, match func(Event) bool) (Event, int, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		t.mu.Lock()
		for i := from; i < len(t.events); i++ {
			if match(t.events[i]) {
				e := t.events[i]
				t.mu.Unlock()
				return e, i, nil
			}
		}
		from = len(t.events)
		ch := t.changed
		t.mu.Unlock()
		select {
		case <-ch:
		case <-deadline.C:
			return Event{}, -1, fmt.Errorf("walkthrough: no matching event within %v", timeout)
		case <-ctx.Done():
			return Event{}, -1, ctx.Err()
		}
	}
}

// Len returns the number of events so far.
func (t *Timeline) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.events)
}

// Process is one running copy of a binary whose stdout speaks the event
// protocol. It runs in its own process group, so that a Ctrl-C in the
// terminal reaches only the driver, which then cleans up; and it is
// killed if the driver dies (Pdeathsig).
type Process struct {
	Name    string
	Inc     int
	Cmd     *exec.Cmd
	Started time.Time

	done    chan struct{}
	waitErr error
	exited  time.Time
	readers sync.WaitGroup
}

// ProcessOptions describe a process to start.
type ProcessOptions struct {
	Name     string    // label for its events
	Inc      int       // incarnation number, for restarts under one name
	Path     string    // binary
	Args     []string  // arguments
	Stderr   io.Writer // its stderr (logs); nil: discarded
	Timeline *Timeline // where its events go; required
	// Unparsed, if set, receives stdout lines that are not events.
	Unparsed func(name, line string)
	// Strict: every stdout line must be an event. A line that is not, a
	// last line cut short (no newline), an over-long line or a read error
	// is recorded in Timeline.Problems: an event may have been lost.
	Strict bool
}

// StartProcess starts a process and begins reading its events.
func StartProcess(o ProcessOptions) (*Process, error) {
	cmd := exec.Command(o.Path, o.Args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Stderr = o.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	p := &Process{Name: o.Name, Inc: o.Inc, Cmd: cmd, done: make(chan struct{})}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("walkthrough: start %s: %w", o.Name, err)
	}
	p.Started = time.Now()
	p.readers.Add(1)
	go func() {
		defer p.readers.Done()
		readEvents(stdout, o)
	}()
	go func() {
		// Read all of stdout before Wait closes the pipe.
		p.readers.Wait()
		p.waitErr = cmd.Wait()
		p.exited = time.Now()
		close(p.done)
	}()
	return p, nil
}

// maxLine is the longest stdout line read as one line.
const maxLine = 1024 * 1024

// readEvents reads a process's stdout to its end, stamping each event with
// the time it was read.
func readEvents(stdout io.Reader, o ProcessOptions) {
	problem := func(format string, args ...any) {
		if o.Strict {
			o.Timeline.Problem("%s#%d stdout: %s", o.Name, o.Inc, fmt.Sprintf(format, args...))
		}
	}
	br := bufio.NewReaderSize(stdout, 64*1024)
	n := 0
	for {
		chunk, err := br.ReadSlice('\n')
		raw := append([]byte(nil), chunk...)
		recv := time.Now()
		for errors.Is(err, bufio.ErrBufferFull) {
			// Longer than the buffer: read the rest of the line, keeping
			// at most maxLine bytes of it.
			chunk, err = br.ReadSlice('\n')
			if len(raw) < maxLine {
				raw = append(raw, chunk...)
			} else if len(chunk) > 0 && chunk[len(chunk)-1] == '\n' {
				raw = append(raw[:maxLine], '\n')
			}
			recv = time.Now()
		}
		if len(raw) > 0 {
			n++
			line := string(raw)
			switch {
			case !strings.HasSuffix(line, "\n"):
				problem("line %d cut short (no newline before %v): %.200q", n, errOrEOF(err), line)
			case len(raw) >= maxLine:
				problem("line %d longer than %d bytes", n, maxLine)
			default:
				line = strings.TrimSuffix(line, "\n")
				if ev, ok := ParseEvent(line); ok {
					ev.Proc, ev.Inc, ev.Recv = o.Name, o.Inc, recv
					o.Timeline.Add(ev)
				} else {
					if o.Unparsed != nil {
						o.Unparsed(o.Name, line)
					}
					problem("line %d is not an event: %.200q", n, line)
				}
			}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, os.ErrClosed) {
				problem("read error after line %d: %v", n, err)
			}
			_, _ = io.Copy(io.Discard, stdout)
			return
		}
	}
}

func errOrEOF(err error) error {
	if err == nil {
		return io.EOF
	}
	return err
}

// Pid returns the process id.
func (p *Process) Pid() int { return p.Cmd.Process.Pid }

// Signal sends sig to the process and returns the time just after the
// signal was sent.
func (p *Process) Signal(sig syscall.Signal) (time.Time, error) {
	select {
	case <-p.done:
		return time.Time{}, fmt.Errorf("walkthrough: %s has exited", p.Name)
	default:
	}
	err := syscall.Kill(p.Pid(), sig)
	return time.Now(), err
}

// Interrupt sends SIGINT.
func (p *Process) Interrupt() (time.Time, error) { return p.Signal(syscall.SIGINT) }

// Kill sends SIGKILL to the process group. The process can do nothing
// after the returned time.
func (p *Process) Kill() (time.Time, error) {
	select {
	case <-p.done:
		return time.Time{}, fmt.Errorf("walkthrough: %s has exited", p.Name)
	default:
	}
	err := syscall.Kill(-p.Pid(), syscall.SIGKILL)
	return time.Now(), err
}

// Done is closed when the process has exited and its stdout is read.
func (p *Process) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has exited.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Wait waits up to timeout for the process to exit and returns its exit
// error (nil for status 0).
func (p *Process) Wait(timeout time.Duration) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-p.done:
		return p.waitErr
	case <-t.C:
		return fmt.Errorf("walkthrough: %s did not exit within %v: %w", p.Name, timeout, errTimeout)
	}
}

var errTimeout = errors.New("timeout")

// ExitErr returns the exit error once the process has exited (nil for
// status 0, or while it runs).
func (p *Process) ExitErr() error {
	if !p.Exited() {
		return nil
	}
	return p.waitErr
}

// ExitTime returns when the driver saw the process exit (zero if not yet).
func (p *Process) ExitTime() time.Time {
	if !p.Exited() {
		return time.Time{}
	}
	return p.exited
}

// Stop ends the process: SIGINT, then SIGKILL to its group after grace.
// It is safe to call on an exited process.
func (p *Process) Stop(grace time.Duration) error {
	if p.Exited() {
		return p.waitErr
	}
	_, _ = p.Interrupt()
	if err := p.Wait(grace); err != nil && errors.Is(err, errTimeout) {
		_, _ = p.Kill()
		return p.Wait(10 * time.Second)
	} else {
		return err
	}
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
