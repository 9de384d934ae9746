package leasehold

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"

	"github.com/leasehold/leasehold/internal/retry"
)

// Elector campaigns for one Lease and runs the leader's work while it holds
// it. Create one with New and start it with Run. Its methods are safe for
// concurrent use.
//
// The state machine:
//
//	follower ──(lease free, released to us, or expired by our clock)──▶ candidate
//	candidate ──(conditional write wins)──▶ leader (a term starts)
//	candidate ──(write conflicts: somebody else wrote)──▶ follower
//	leader ──(renew deadline passed, other holder seen, lease deleted)──▶ stopping (lost)
//	leader ──(Run's ctx cancelled, Yield, annotation, or the work returned)──▶ stopping (stepping down)
//	stopping ──(work returned, safety margin or StepDownTimeout ran out)──▶ Run returns, or follower if Rejoin or a yield
//
// Run's goroutine owns the state. Run reads campaign → term → rejoin; a
// run is follower and candidate (campaign), and a term is leader and
// stopping, ended by one of its small methods: lose, stepDown or giveUp.
type Elector struct {
	cfg   Config
	t     timings
	lock  *LeaseLock
	clock clock.WithTicker
	// boot reads the time since boot, suspend included; nil if unknown
	// (instant.go).
	boot func() time.Duration

	running atomic.Bool

	// coord is set by NewCoordinated: coordinated election (KEP-4355),
	// coordinated.go. nil for New's Elector; its methods are no-ops then.
	coord *coordination

	health apiHealth

	// specPreferenceDropped is set once a release that wrote
	// spec.preferredHolder got an answer without it: the API server drops
	// the field, and later releases name the successor in the annotation
	// only (decide.go, writesSpecPreference).
	specPreferenceDropped atomic.Bool

	mu     sync.Mutex
	status status
}

// New validates cfg, fills in its defaults, and returns an Elector. On a bad
// config it returns a nil Elector and one error, wrapping ErrInvalidConfig,
// that names every problem found.
func New(cfg Config) (*Elector, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	e := &Elector{
		cfg:   cfg,
		lock:  cfg.Lock,
		clock: cfg.Clock,
		boot:  bootReader(cfg.Clock),
		t: timings{
			leaseDuration: cfg.LeaseDuration,
			renewDeadline: cfg.RenewDeadline,
			retryPeriod:   cfg.RetryPeriod,
		},
	}
	cfg.Metrics.LeaderChanged(cfg.Name, false)
	return e, nil
}

// RunOrDie builds an Elector from cfg and runs it until ctx is cancelled.
// If cfg is invalid or Run returns an error, it logs the error and exits the
// process with status 1, so a supervisor (the kubelet) restarts it.
func RunOrDie(ctx context.Context, cfg Config) {
	if err := Run(ctx, cfg); err != nil {
		klog.FromContext(ctx).Error(err, "Leader election ended")
		klog.FlushAndExit(klog.ExitFlushTimeout, 1)
	}
}

// Run campaigns for the lease and, while it leads, runs
// Callbacks.OnStartedLeading. It returns:
//   - nil when ctx is cancelled (after stepping down cleanly if leading);
//   - an error wrapping ErrLeaderLost when a term ended by losing the lease;
//   - an error wrapping ErrWorkReturned or ErrWorkPanicked when the work
//     ended on its own while leading;
//   - an error wrapping ErrIdentityConflict when another live process uses
//     this identity;
//   - an error wrapping ErrStepDownTimeout when the work did not return
//     within StepDownTimeout of a step-down (exit the process then);
//
// A term that ended with a Yield (Elector.Yield or the annotation) is
// always followed by a new campaign: a yield moves leadership, not the
// process. With Config.Rejoin, a term that ends with an error (other than
// an identity conflict or a step-down timeout) is followed by a new
// campaign too. A second Run while one is active returns
// ErrAlreadyRunning.
func (e *Elector) Run(ctx context.Context) error {
	if !e.running.CompareAndSwap(false, true) {
		return ErrAlreadyRunning
	}
	defer e.running.Store(false)
	log := klog.FromContext(ctx).WithName("leasehold").WithValues("lease", e.cfg.Name, "identity", e.lock.Identity)
	ctx = klog.NewContext(ctx, log)
	ctx, stopCandidate := e.coord.start(ctx) // coordinated election (coordinated.go); no-op when nil
	defer stopCandidate()
	r := e.startRun(ctx, log)
	defer r.close()
	for {
		won, err := r.campaign(ctx) // follower, then candidate
		if err != nil || !won {
			return err
		}
		if again, err := r.again(ctx, r.lead(ctx)); !again { // leader, then stopping
			return err
		}
	}
}

// again decides, after a term that ended as end says, whether Run
// campaigns again: after a yield always (a yield moves leadership, not the
// process; it sits out as the term asked, see sitOut), after an error only
// with Rejoin and never after an identity conflict or a step-down timeout,
// and never once ctx has ended. It waits for a lost term's overdue work
// first, and one RetryPeriod.
func (r *run) again(ctx context.Context, end ending) (bool, error) {
	e, log, err := r.e, r.log, end.err
	if end.sitOut != nil {
		r.sitOut(*end.sitOut)
	}
	if errors.Is(err, errYielded) {
		if ctx.Err() != nil {
			return false, nil
		}
		log.Info("Yielded the lease; following again")
		return true, nil
	}
	if err == nil || !e.cfg.Rejoin || errors.Is(err, ErrIdentityConflict) || errors.Is(err, ErrStepDownTimeout) {
		return false, err
	}
	if end.overdue != nil {
		log.Info("Waiting for the previous term's work to return before campaigning again")
		select {
		case <-end.overdue:
		case <-ctx.Done():
			return false, err
		}
	}
	log.Info("Term ended; campaigning again", "reason", err.Error())
	return retry.Sleep(ctx, e.clock, e.t.retryPeriod), nil
}

// run is the state of one Run call, owned by Run's goroutine.
type run struct {
	e   *Elector
	log logr.Logger

	view leaseView
	// seen is set once the first observation arrived.
	seen bool
	// foreignSelf is set when the Lease names our identity but we did not
	// write it: another process, or a previous incarnation of this one.
	foreignSelf bool
	// stamps are the renewTimes of our recent writes. A Lease naming us
	// with one of them is ours even if the write's answer was lost.
	stamps [8]time.Time
	next   int
	// ownStamp is the renewTime of our last write whose success we were
	// told of. It stays ours however many failed writes push it out of
	// stamps: a hand edit of that version (a label, an annotation) keeps
	// it, and must not look like another process using our identity.
	ownStamp time.Time
	// sitOutUntil and sitOutVersion are set by a yield: while the Lease
	// is still at sitOutVersion (nobody wrote since the release, or since
	// our last renewal if the release failed), this process writes nothing
	// before sitOutUntil, so that the successor, or another candidate,
	// takes it. Any newer version ends the sit-out.
	sitOutUntil   time.Time
	sitOutVersion string
	// quickReturns counts terms in a row whose work returned on its own
	// within a RetryPeriod of starting.
	quickReturns int
	// lastHolder is the holder of the newest Lease seen, for the log.
	lastHolder string
	// versionless is set once a Lease without a resourceVersion was seen
	// (and said so in the log): the server cannot order or guard writes.
	versionless bool
	// recent are the versions (versionOf) of the last versionless Leases
	// seen. Without resourceVersions a watch may still deliver a version
	// this process has seen replaced (client-go's fakes send the state at
	// the watch's start as an ADDED event); one found here is stale. An
	// election never writes a version twice: each write has a new
	// renewTime, and each term a new leaseTransitions. Only a hand edit
	// undone with nothing in between (an annotation added, then removed)
	// brings one back, and that undo is then missed: a cost paid on
	// fakes only, which cannot order writes at all.
	recent     [8]string
	nextRecent int
	// acquiredAt is the send time of the write that won the current term.
	acquiredAt instant
	// holdUntil, if set, is when the work of a term this process wins may
	// start: a holder whose Lease was deleted may work until then. Either
	// the deletion was seen (markGone: that holder's claim), or the watch
	// showed another holder's Lease created and deleted while our create
	// was in flight (heldBack). A Lease won before then is kept by
	// renewals that start no term; holdSaid is set once that was logged.
	holdUntil time.Time
	holdSaid  bool

	observations mailbox
	notifier     *leaderNotifier
	stopObserver context.CancelFunc
	observerDone chan struct{}
}

func (e *Elector) startRun(ctx context.Context, log logr.Logger) *run {
	r := &run{
		e:            e,
		log:          log,
		observations: newMailbox(),
		notifier:     newLeaderNotifier(log, e.cfg.Callbacks.OnNewLeader),
		observerDone: make(chan struct{}),
	}
	// The observer outlives Run's ctx: a leader that is stepping down
	// keeps watching until its work has returned.
	octx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	r.stopObserver = cancel
	o := &observer{
		lock:        e.lock,
		clock:       e.clock,
		retryPeriod: e.t.retryPeriod,
		timeout:     e.t.requestTimeout(),
		log:         log,
		out:         r.observations,
		shared:      e.cfg.SharedWatch,
		health:      &e.health,
	}
	go func() {
		defer close(r.observerDone)
		o.run(octx)
	}()
	return r
}

func (r *run) close() {
	r.stopObserver()
	<-r.observerDone
	r.notifier.close()
}

// Run builds an Elector from cfg and runs it: RunOrDie that returns the
// error instead of exiting (New's error for a bad config, else Run's).
func Run(ctx context.Context, cfg Config) error {
	e, err := New(cfg)
	if err != nil {
		return err
	}
	return e.Run(ctx)
}
