package walkthrough

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/leasehold/leasehold/test/internal/sleep"
)

// Options configure the walk-through.
type Options struct {
	Binary     string // examples/leader-election, from BuildExample
	Kubeconfig string // for the processes
	Namespace  string // default "default"
	LeaseName  string // default "example"
	IDs        []string

	LeaseDuration, RenewDeadline, RetryPeriod time.Duration

	// Admin reads the Lease. Required.
	Admin kubernetes.Interface
	// LogDir receives each process's stderr as <id>.log; "" discards it.
	LogDir string
	// Settle is how long to let a new leader lead before the next step,
	// so that it renews at least once. Default: RetryPeriod + 1s.
	Settle time.Duration
	// Logf narrates the steps; nil is silent.
	Logf func(format string, args ...any)
}

// Step is one timed step of the walk-through.
type Step struct {
	Name string
	Took time.Duration
}

// Result is what the walk-through observed. Times are wall-clock times:
// the processes' own (in their stdout lines) and the driver's (signals),
// on one machine.
type Result struct {
	Start  time.Time
	Events []Event
	Steps  []Step

	FirstLeader  string
	FirstLeading time.Time

	Interrupted   string    // the first leader, sent SIGINT
	InterruptAt   time.Time // when SIGINT was sent
	StoppedAt     time.Time // its OnStartedLeading returned
	ExitAt        time.Time // its EXIT line
	InterruptExit error     // its exit status (nil: 0)
	SecondLeader  string
	SecondLeading time.Time

	Killed       string // the second leader, sent SIGKILL
	KillAt       time.Time
	ThirdLeader  string
	ThirdLeading time.Time

	// HeldLease is the Lease read just after the third leader took over;
	// FinalLease after the last process stopped (released).
	HeldLease  *coordinationv1.Lease
	FinalLease *coordinationv1.Lease
	LastExit   error // exit status of the last leader after SIGINT

	// Kills maps each SIGKILLed process to the kill time: its term, if
	// open, ended then.
	Kills map[string]time.Time

	// Problems lists stdout lines of the processes that were lost or could
	// not be read as events (see ProcessOptions.Strict): with any, the
	// events above may be incomplete.
	Problems []string
}

// SIGINTHandoff is the time from the old leader's work returning
// (STOPPED) to the new leader's work starting (LEADING).
func (r *Result) SIGINTHandoff() time.Duration { return r.SecondLeading.Sub(r.StoppedAt) }

// SIGINTHandoffFromSignal is the same, measured from the SIGINT.
func (r *Result) SIGINTHandoffFromSignal() time.Duration {
	return r.SecondLeading.Sub(r.InterruptAt)
}

// KillHandoff is the time from the SIGKILL to the next LEADING.
func (r *Result) KillHandoff() time.Duration { return r.ThirdLeading.Sub(r.KillAt) }

// Term is one leadership term of one process, from LEADING to STOPPED, or
// to its SIGKILL, or open (zero End) if neither came.
type Term struct {
	ID         string
	Start, End time.Time
	Killed     bool
}

// Terms pairs LEADING and STOPPED lines per process; kills close open
// terms.
func Terms(events []Event, kills map[string]time.Time) []Term {
	open := map[string]int{}
	var terms []Term
	for _, e := range events {
		switch e.Kind {
		case "LEADING":
			open[e.Proc] = len(terms)
			terms = append(terms, Term{ID: e.Proc, Start: e.At})
		case "STOPPED":
			if i, ok := open[e.Proc]; ok {
				terms[i].End = e.At
				delete(open, e.Proc)
			}
		}
	}
	for id, i := range open {
		if k, ok := kills[id]; ok {
			terms[i].End, terms[i].Killed = k, true
		}
	}
	slices.SortFunc(terms, func(a, b Term) int { return a.Start.Compare(b.Start) })
	return terms
}

// Overlaps describes every pair of terms of different processes that
// overlap in time, and every term still open. Empty means exactly one
// leader at a time.
func Overlaps(terms []Term) []string {
	var out []string
	for i, a := range terms {
		if a.End.IsZero() {
			out = append(out, fmt.Sprintf("term of %s started at %s never ended", a.ID, a.Start.Format(time.RFC3339Nano)))
			continue
		}
		for _, b := range terms[i+1:] {
			if a.ID != b.ID && b.Start.Before(a.End) && (b.End.IsZero() || a.Start.Before(b.End)) {
				out = append(out, fmt.Sprintf("%s led until %s, %s started at %s (%v overlap)",
					a.ID, a.End.Format("15:04:05.000000"), b.ID, b.Start.Format("15:04:05.000000"), a.End.Sub(b.Start)))
			}
		}
	}
	return out
}

// Run runs the walk-through: three processes elect a leader; SIGINT to
// the leader hands over at once; SIGKILL to the next leader hands over
// after about LeaseDuration; SIGINT to the last one releases the Lease.
// Every process is stopped before Run returns, whatever happened.
func Run(ctx context.Context, o Options) (*Result, error) {
	if o.Namespace == "" {
		o.Namespace = "default"
	}
	if o.LeaseName == "" {
		o.LeaseName = "example"
	}
	if len(o.IDs) == 0 {
		o.IDs = []string{"1", "2", "3"}
	}
	if o.Settle == 0 {
		o.Settle = o.RetryPeriod + time.Second
	}
	logf := o.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}

	res := &Result{Start: time.Now(), Kills: map[string]time.Time{}}
	at := func(t time.Time) string { return fmt.Sprintf("[%7.3fs]", t.Sub(res.Start).Seconds()) }
	tl := NewTimeline()
	procs := map[string]*Process{}
	var logFiles []*os.File
	var mu sync.Mutex
	defer func() {
		var wg sync.WaitGroup
		for _, p := range procs {
			wg.Add(1)
			go func() { defer wg.Done(); _ = p.Stop(5 * time.Second) }()
		}
		wg.Wait()
		for _, f := range logFiles {
			_ = f.Close()
		}
		res.Events = tl.Events()
		res.Problems = tl.Problems()
	}()
	stepStart := time.Now()
	step := func(name string) {
		mu.Lock()
		defer mu.Unlock()
		res.Steps = append(res.Steps, Step{Name: name, Took: time.Since(stepStart)})
		stepStart = time.Now()
	}
	getLease := func() (*coordinationv1.Lease, error) {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		return o.Admin.CoordinationV1().Leases(o.Namespace).Get(rctx, o.LeaseName, metav1.GetOptions{})
	}

	// 1. Start the processes.
	for _, id := range o.IDs {
		var stderr io.Writer
		if o.LogDir != "" {
			f, err := os.Create(filepath.Join(o.LogDir, id+".log"))
			if err != nil {
				return res, err
			}
			logFiles = append(logFiles, f)
			stderr = f
		}
		p, err := StartProcess(ProcessOptions{
			Name: id, Path: o.Binary, Timeline: tl, Stderr: stderr, Strict: true,
			Args: []string{
				"-kubeconfig=" + o.Kubeconfig,
				"-lease-lock-name=" + o.LeaseName,
				"-lease-lock-namespace=" + o.Namespace,
				"-id=" + id,
				"-lease-duration=" + o.LeaseDuration.String(),
				"-renew-deadline=" + o.RenewDeadline.String(),
				"-retry-period=" + o.RetryPeriod.String(),
			},
		})
		if err != nil {
			return res, err
		}
		procs[id] = p
	}
	logf("%s started processes %s on Lease %s/%s (LeaseDuration %v, RenewDeadline %v, RetryPeriod %v)",
		at(time.Now()), strings.Join(o.IDs, ", "), o.Namespace, o.LeaseName, o.LeaseDuration, o.RenewDeadline, o.RetryPeriod)

	// 2. One of them leads; the others report it.
	ev, _, err := tl.WaitFor(ctx, 0, 60*time.Second, func(e Event) bool { return e.Kind == "LEADING" })
	if err != nil {
		return res, fmt.Errorf("no process started leading: %w", err)
	}
	res.FirstLeader, res.FirstLeading = ev.Proc, ev.At
	logf("%s %s is leading (elected %v after start)", at(ev.At), ev.Proc, ev.At.Sub(res.Start).Round(time.Millisecond))
	var follows []timedLine // printed in time order, not arrival order
	for _, id := range o.IDs {
		if id == res.FirstLeader {
			continue
		}
		nl, _, err := tl.WaitFor(ctx, 0, 10*time.Second, func(e Event) bool {
			return e.Kind == "NEWLEADER" && e.Proc == id && len(e.Fields) == 2 && e.Fields[1] == res.FirstLeader
		})
		if err != nil {
			return res, fmt.Errorf("%s never reported %s as leader: %w", id, res.FirstLeader, err)
		}
		follows = append(follows, timedLine{nl.At, fmt.Sprintf("%s %s follows: NEWLEADER %s", at(nl.At), id, res.FirstLeader)})
	}
	logInOrder(logf, follows...)
	step("start " + fmt.Sprint(len(o.IDs)) + " processes and elect a leader")
	if sleep.For(ctx, o.Settle) != nil {
		return res, ctx.Err()
	}

	// 3. SIGINT to the leader: it stops its work, releases, and another
	// takes over at once.
	stepStart = time.Now()
	res.Interrupted = res.FirstLeader
	from := tl.Len()
	if res.InterruptAt, err = procs[res.Interrupted].Interrupt(); err != nil {
		return res, err
	}
	logf("%s SIGINT -> %s", at(res.InterruptAt), res.Interrupted)
	stopped, _, err := tl.WaitFor(ctx, from, 15*time.Second, func(e Event) bool { return e.Kind == "STOPPED" && e.Proc == res.Interrupted })
	if err != nil {
		return res, fmt.Errorf("%s did not stop its work after SIGINT: %w", res.Interrupted, err)
	}
	res.StoppedAt = stopped.At
	logf("%s %s: work stopped (OnStartedLeading returned)", at(stopped.At), res.Interrupted)
	ev, _, err = tl.WaitFor(ctx, from, 15*time.Second, func(e Event) bool { return e.Kind == "LEADING" })
	if err != nil {
		return res, fmt.Errorf("nobody took over after SIGINT to %s: %w", res.Interrupted, err)
	}
	res.SecondLeader, res.SecondLeading = ev.Proc, ev.At
	leading := timedLine{ev.At, fmt.Sprintf("%s %s is leading: took over %v after %s's work stopped (%v after SIGINT)",
		at(ev.At), ev.Proc, res.SIGINTHandoff().Round(time.Microsecond), res.Interrupted, res.SIGINTHandoffFromSignal().Round(time.Microsecond))}
	exit, _, err := tl.WaitFor(ctx, from, 15*time.Second, func(e Event) bool { return e.Kind == "EXIT" && e.Proc == res.Interrupted })
	if err != nil {
		return res, fmt.Errorf("%s did not exit after SIGINT: %w", res.Interrupted, err)
	}
	res.ExitAt = exit.At
	res.InterruptExit = procs[res.Interrupted].Wait(15 * time.Second)
	logInOrder(logf, leading, timedLine{exit.At, fmt.Sprintf("%s %s exited (status: %s)", at(exit.At), res.Interrupted, status(res.InterruptExit))})
	step("SIGINT to the leader; handoff")
	if sleep.For(ctx, o.Settle) != nil {
		return res, ctx.Err()
	}

	// 4. SIGKILL to the new leader: nobody releases; a follower takes
	// over when the lease expires by its clock.
	stepStart = time.Now()
	res.Killed = res.SecondLeader
	from = tl.Len()
	if res.KillAt, err = procs[res.Killed].Kill(); err != nil {
		return res, err
	}
	res.Kills[res.Killed] = res.KillAt
	logf("%s SIGKILL -> %s (no release: the others wait for the lease to expire, %v)", at(res.KillAt), res.Killed, o.LeaseDuration)
	ev, _, err = tl.WaitFor(ctx, from, o.LeaseDuration+30*time.Second, func(e Event) bool { return e.Kind == "LEADING" })
	if err != nil {
		return res, fmt.Errorf("nobody took over after SIGKILL to %s: %w", res.Killed, err)
	}
	res.ThirdLeader, res.ThirdLeading = ev.Proc, ev.At
	logf("%s %s is leading: took over %v after the SIGKILL", at(ev.At), ev.Proc, res.KillHandoff().Round(time.Millisecond))
	if res.HeldLease, err = getLease(); err != nil {
		return res, fmt.Errorf("read the lease: %w", err)
	}
	step("SIGKILL to the new leader; takeover after expiry")

	// 5. SIGINT to the last one: it releases the Lease.
	stepStart = time.Now()
	from = tl.Len()
	last := procs[res.ThirdLeader]
	t, err := last.Interrupt()
	if err != nil {
		return res, err
	}
	logf("%s SIGINT -> %s", at(t), res.ThirdLeader)
	if _, _, err = tl.WaitFor(ctx, from, 15*time.Second, func(e Event) bool { return e.Kind == "EXIT" && e.Proc == res.ThirdLeader }); err != nil {
		return res, fmt.Errorf("%s did not exit after SIGINT: %w", res.ThirdLeader, err)
	}
	res.LastExit = last.Wait(15 * time.Second)
	logf("%s %s exited (status: %s)", at(time.Now()), res.ThirdLeader, status(res.LastExit))
	if res.FinalLease, err = getLease(); err != nil {
		return res, fmt.Errorf("read the lease: %w", err)
	}
	step("SIGINT to the last leader; release")
	return res, nil
}

func status(err error) string {
	if err == nil {
		return "0"
	}
	return err.Error()
}

// timedLine is a narration line and the time it tells of.
type timedLine struct {
	at   time.Time
	line string
}

// logInOrder narrates lines in the order of the times they tell of, not
// in the order their events arrived from different processes.
func logInOrder(logf func(string, ...any), lines ...timedLine) {
	sort.SliceStable(lines, func(i, j int) bool { return lines[i].at.Before(lines[j].at) })
	for _, l := range lines {
		logf("%s", l.line)
	}
}
