package leasehold

// Coordinated leader election (KEP-4355): the process registers a
// LeaseCandidate, answers the election controller's pings, and takes up the
// terms the controller assigns to it instead of taking the Lease itself.
// Everything else (renewing, stepping down, yielding on spec.preferredHolder)
// is the Elector's usual term.

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/version"
	coordinationv1beta1client "k8s.io/client-go/kubernetes/typed/coordination/v1beta1"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"

	"github.com/leasehold/leasehold/internal/leaserecord"
)

// CandidateConfig describes this process to kube-apiserver's coordinated
// leader election controller (KEP-4355), for NewCoordinated.
type CandidateConfig struct {
	// Client reaches the LeaseCandidate API, typically
	// clientset.CoordinationV1beta1(). Required.
	Client coordinationv1beta1client.LeaseCandidatesGetter

	// BinaryVersion is the semantic version of this binary, such as
	// "1.34.2" (a leading "v" is dropped). Required.
	BinaryVersion string

	// EmulationVersion is the version whose behaviour this binary
	// emulates; it must not be above BinaryVersion. With the
	// OldestEmulationVersion strategy the controller prefers the
	// candidate with the oldest one, then the oldest binary, then the
	// oldest registration. Default: BinaryVersion.
	EmulationVersion string

	// Strategy is the strategy this candidate asks the controller to
	// follow. Default: coordinationv1.OldestEmulationVersion, the only
	// one kube-apiserver implements.
	Strategy coordinationv1.CoordinatedLeaseStrategy
}

// candidateRenewEvery is how often a candidate renews its LeaseCandidate
// when nobody pings it. The controller drops candidates not renewed for
// 30 minutes and forces an election when one was not renewed for 15.
const candidateRenewEvery = 5 * time.Minute

// controllerGrace is how long a candidate waits for the election controller
// to name a holder of a Lease that is free (absent, released, or expired by
// this process's clock) before it campaigns for it itself. The controller
// notices an expired Lease within 5s (its requeue interval) and waits at
// most 5s for candidates to answer its pings, so it names a holder well
// within this unless it does not run at all: the LeaseCandidate API is
// served while the CoordinatedLeaderElection gate is off, or the
// controller's own leader is failing over.
const controllerGrace = 20 * time.Second

// NewCoordinated returns an Elector for coordinated leader election
// (KEP-4355), as client-go's LeaderElectionConfig.Coordinated offers it:
// kube-apiserver's election controller picks the leader among the
// registered candidates, by default the one with the oldest emulation
// version, so that during an upgrade the leader is never newer than the
// oldest replica. The cluster needs kube-apiserver's
// CoordinatedLeaderElection feature gate and the coordination.k8s.io/v1beta1
// API (--runtime-config=coordination.k8s.io/v1beta1=true).
//
// While Run runs, the Elector:
//   - registers a LeaseCandidate named after Lock.Identity, in the Lease's
//     namespace, with cc's versions, and renews it whenever the controller
//     pings it (a watch on it; the answer takes milliseconds) and every
//     five minutes;
//   - never takes the Lease itself: it takes up a term when the controller
//     writes its identity as the holder, with one conditional write, and
//     then renews the Lease as any leasehold Elector does. A term assigned
//     while another holder's claim is still running by this process's
//     clock (a controller whose clock runs ahead) starts when that claim
//     ends, so the old work has stopped first;
//   - hands the Lease back in milliseconds when the controller names a
//     better candidate in spec.preferredHolder: its work is cancelled, it
//     keeps renewing until OnStartedLeading has returned, then releases the
//     Lease, and the controller assigns it to the better candidate.
//     client-go's elector only stops renewing, and its work runs on until
//     RenewDeadline has passed: the handover takes about 12s with
//     ReleaseOnCancel, and until the Lease expires (15s and more) without;
//   - withdraws its LeaseCandidate when Run's ctx is cancelled, before it
//     releases the Lease, so that the controller does not hand the Lease
//     back to a process that is leaving. The work is cancelled at once,
//     as in any step-down, and StepDownTimeout counts from the
//     cancellation: a slow withdrawal delays only the release, within
//     that bound.
//
// Where the LeaseCandidate API is not served (404), Run logs one line and
// campaigns as New's Elector does. Where it is served but no controller
// assigns a free Lease within 20 seconds (the feature gate is off), the
// Elector campaigns for it itself, and says so in the log; the controller,
// when it comes, moves the Lease to its choice through
// spec.preferredHolder.
//
// Yield and the leasehold.dev/preferred-holder annotation still end the
// term in milliseconds, but the controller picks the successor: the one
// named is only a hint, which the controller may overrule.
//
// Lock.Identity is the LeaseCandidate's name and the holder the controller
// writes, so it must be unique per process and Lease within the namespace,
// and a valid object name: letters, digits, '-', '_' and '.'
// (DefaultIdentity's are). The process needs create, get, update, watch
// and delete on leasecandidates in the namespace, besides the Lease's
// rights. The Elector runs one more goroutine than New's, to follow its
// LeaseCandidate. The API server warns on every LeaseCandidate request
// that v1beta1 is deprecated from Kubernetes 1.36; client-go logs such
// warnings unless rest.Config.WarningHandler says otherwise.
//
// cfg is validated as New does; every problem of cfg and cc is named in one
// error wrapping ErrInvalidConfig.
func NewCoordinated(cfg Config, cc CandidateConfig) (*Elector, error) {
	cc, problems := cc.validated(cfg.Lock)
	if cfg.Lock != nil && cfg.Lock.Client != nil {
		lock := *cfg.Lock
		lock.Client = holderKeepingLeases{cfg.Lock.Client}
		cfg.Lock = &lock
	}
	e, err := New(cfg)
	switch {
	case err != nil && len(problems) > 0:
		return nil, fmt.Errorf("%w; %s", err, strings.Join(problems, "; "))
	case err != nil:
		return nil, err
	case len(problems) > 0:
		return nil, invalidConfig(problems)
	}
	e.coord = &coordination{cc: cc, lock: e.lock, clock: e.clock, t: e.t, report: e.candidacyReporter()}
	return e, nil
}

// validated returns cc with its defaults, and its problems.
func (cc CandidateConfig) validated(lock *LeaseLock) (CandidateConfig, []string) {
	var problems []string
	add := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	if cc.Client == nil {
		add("CandidateConfig.Client is nil: set it to clientset.CoordinationV1beta1()")
	}
	if cc.Strategy == "" {
		cc.Strategy = coordinationv1.OldestEmulationVersion
	}
	cc.BinaryVersion = strings.TrimPrefix(strings.TrimSpace(cc.BinaryVersion), "v")
	cc.EmulationVersion = strings.TrimPrefix(strings.TrimSpace(cc.EmulationVersion), "v")
	if cc.EmulationVersion == "" {
		cc.EmulationVersion = cc.BinaryVersion
	}
	var binary, emulation *version.Version
	if cc.BinaryVersion == "" {
		add(`CandidateConfig.BinaryVersion is "": set this binary's semantic version, e.g. "1.34.2"`)
	} else if v, err := version.ParseSemantic(cc.BinaryVersion); err != nil {
		add("CandidateConfig.BinaryVersion %q is not a semantic version MAJOR.MINOR.PATCH, e.g. \"1.34.2\": %v", cc.BinaryVersion, err)
	} else {
		binary = v
	}
	if cc.EmulationVersion != cc.BinaryVersion {
		if v, err := version.ParseSemantic(cc.EmulationVersion); err != nil {
			add("CandidateConfig.EmulationVersion %q is not a semantic version MAJOR.MINOR.PATCH, e.g. \"1.33.0\": %v", cc.EmulationVersion, err)
		} else {
			emulation = v
		}
	}
	if binary != nil && emulation != nil && binary.LessThan(emulation) {
		add("CandidateConfig.EmulationVersion %s is above BinaryVersion %s: a binary can only emulate its own or an older version", cc.EmulationVersion, cc.BinaryVersion)
	}
	if lock != nil && lock.Identity != "" {
		if msgs := validation.IsConfigMapKey(lock.Identity); len(msgs) > 0 {
			add("Lock.Identity %q cannot name a LeaseCandidate (%s): in coordinated election the identity is the candidate's name; use letters, digits, '-', '_' and '.' (DefaultIdentity's are fine)",
				lock.Identity, strings.Join(msgs, "; "))
		}
	}
	return cc, problems
}

// coordination is the coordinated-election state of an Elector made by
// NewCoordinated. Its fields after t are owned by Run's goroutine and reset
// by each Run; the LeaseCandidate is kept by a candidate, on a goroutine of
// its own. A nil *coordination is New's plain election: every method is
// then a no-op.
type coordination struct {
	cc    CandidateConfig
	lock  *LeaseLock
	clock clock.WithTicker
	t     timings

	// report tells Config.Metrics the candidacy's state (CandidacyMetrics).
	report func(state string)
	// fallback is set when the LeaseCandidate API is not served: the
	// election is the plain one.
	fallback bool
	// withdrawn is closed once this Run's candidacy has ended (the
	// LeaseCandidate withdrawn), and leaving reports whether Run's ctx is
	// cancelled: then a release waits for the withdrawal
	// (awaitWithdrawal). Nil without a candidacy.
	withdrawn <-chan struct{}
	leaving   func() bool
	// version is the Lease version (and whether it was seen deleted) the
	// fields below were computed for.
	version string
	// claimEnds is when the last live claim of another holder seen runs
	// out by this process's clock; zero after a release.
	claimEnds time.Time
	// sawBefore is set once the campaign decided on anything (the Lease
	// absent included): an assignment seen first comes with an unknown
	// previous holder.
	sawBefore bool
	// freeSince is when this version was first found free for the
	// taking (absent, released, expired): the controller's turn began.
	freeSince time.Time
	// campaigning is set once a free version was left to the controller
	// for controllerGrace in vain, and the elector campaigns itself.
	campaigning bool
	// takingUp is set once the take-up of an assigned version was logged;
	// waitLogged once its wait for the previous claim was.
	takingUp, waitLogged bool
}

// assigned reports whether lease names self as its holder in a write of the
// election controller, not yet taken up: the controller leaves acquireTime
// unset, and every write of a leasehold Elector sets it. (client-go's
// coordinated elector keeps it unset through its whole term, but never
// under this process's identity.)
func (c *coordination) assigned(lease *coordinationv1.Lease) bool {
	return c != nil && !c.fallback && lease != nil && leaserecord.Holder(lease) == c.lock.Identity && lease.Spec.AcquireTime == nil
}

// start registers the candidate and starts keeping it, for one Run. It
// returns the ctx the elector runs with: cancelled only after the candidate
// has withdrawn once ctx is cancelled, so that the controller does not pick
// this process again while it steps down. stop ends the candidate when Run
// returns on its own. With the LeaseCandidate API missing it logs one line
// and changes nothing.
func (c *coordination) start(ctx context.Context) (context.Context, func()) {
	if c == nil {
		return ctx, func() {}
	}
	*c = coordination{cc: c.cc, lock: c.lock, clock: c.clock, t: c.t, report: c.report}
	log := klog.FromContext(ctx)
	k := &candidacy{cc: c.cc, lock: c.lock, clock: c.clock, t: c.t, log: log,
		client: c.cc.Client.LeaseCandidates(c.lock.Namespace)}
	err := k.register(ctx)
	switch {
	case errors.Is(err, errCandidateAPIMissing):
		c.fallback = true
		c.report(CandidacyUnsupported)
		log.Info("The LeaseCandidate API (coordination.k8s.io/v1beta1) is not served; campaigning without coordinated leader election")
		return ctx, func() {}
	case err != nil:
		log.Error(err, "Cannot register as a LeaseCandidate yet; retrying in the background. The election controller cannot pick this process meanwhile")
	default:
		log.Info("Registered as a LeaseCandidate; the election controller picks the leader",
			"binaryVersion", c.cc.BinaryVersion, "emulationVersion", c.cc.EmulationVersion, "strategy", c.cc.Strategy)
	}
	c.report(CandidacyCandidate)
	// The elector's ctx ends with Run's, so the work is cancelled at once
	// and StepDownTimeout counts from the cancellation; the release waits
	// for the withdrawal (awaitWithdrawal). It also ends if the candidacy
	// ends on its own.
	electorCtx, stopElector := context.WithCancel(context.WithoutCancel(ctx))
	unhook := context.AfterFunc(ctx, stopElector)
	serveCtx, stopServing := context.WithCancel(ctx)
	done := make(chan struct{})
	c.withdrawn, c.leaving = done, func() bool { return ctx.Err() != nil }
	go func() {
		defer close(done)
		defer stopElector()
		k.serve(serveCtx)
		k.withdraw(ctx)
		c.report(CandidacyWithdrawn)
	}()
	return electorCtx, func() {
		unhook()
		stopServing()
		<-done
	}
}

// awaitWithdrawal, once Run's ctx is cancelled, waits until the
// LeaseCandidate is withdrawn (one request, bounded by its timeout), or
// until by if set (the step-down's bound): a Lease released before that
// could be assigned straight back to this leaving process.
func (c *coordination) awaitWithdrawal(by time.Time) {
	if c == nil || c.withdrawn == nil || !c.leaving() {
		return
	}
	var timeout <-chan time.Time
	if !by.IsZero() {
		t := c.clock.NewTimer(by.Sub(c.clock.Now()))
		defer t.Stop()
		timeout = t.C()
	}
	select {
	case <-c.withdrawn:
	case <-timeout:
	}
}

// noteSuperseded folds into claimEnds the claims of the versions that
// the newest-wins mailbox superseded before a campaign decision saw them
// (a lagging watch delivers several at one instant): a holder's claim is
// counted from now, a release ends it. Without it, an assignment arriving
// together with the term taken up before it was taken up at once, while
// that term's work ran.
func (c *coordination) noteSuperseded(r *run, list []*coordinationv1.Lease, now time.Time) {
	if c == nil || c.fallback {
		return
	}
	for _, l := range list {
		if l == nil || (r.view.lease != nil && !newerLease(l, r.view.lease)) {
			continue
		}
		switch h := leaserecord.Holder(l); {
		case h == "":
			c.claimEnds = time.Time{}
		case h == r.e.lock.Identity || c.assigned(l):
		default:
			c.sawBefore = true
			if end := now.Add(leaserecord.ClaimDuration(l, r.e.t.leaseDuration)); end.After(c.claimEnds) {
				c.claimEnds = end
			}
		}
	}
}

// decide adjusts a campaign decision (decideCampaign's act and at) for
// coordinated election. It takes up a term assigned to this process, after
// the last claim of another holder it saw has run out; it leaves a free
// Lease to the controller for controllerGrace; everything else stands.
func (c *coordination) decide(r *run, now time.Time, act campaignAction, at time.Time) (campaignAction, time.Time) {
	if c == nil || c.fallback {
		return act, at
	}
	v := r.view
	self := r.e.lock.Identity
	ver := versionOf(v.lease)
	if v.gone {
		ver += " (deleted)"
	}
	first := !c.sawBefore
	c.sawBefore = true
	if ver != c.version || first {
		c.version, c.freeSince, c.campaigning, c.takingUp, c.waitLogged = ver, time.Time{}, false, false, false
		switch holder := leaserecord.Holder(v.lease); {
		case c.assigned(v.lease) && first:
			// The first version this process sees is the controller's
			// assignment: whoever held the Lease before is unknown, and
			// its work may still run. Wait a whole claim from now.
			c.claimEnds = v.observedAt.Add(max(leaserecord.ClaimDuration(v.lease, r.e.t.leaseDuration), r.e.t.leaseDuration))
		case v.gone || c.assigned(v.lease):
			// Keep the claim of the holder seen before.
		case holder == "" || holder == self:
			c.claimEnds = time.Time{}
		default:
			c.claimEnds = v.observedAt.Add(leaserecord.ClaimDuration(v.lease, r.e.t.leaseDuration))
		}
	}
	switch {
	case !v.gone && c.assigned(v.lease):
		// The controller's choice: no sitting out after a yield.
		r.sitOutUntil = time.Time{}
		if now.Before(c.claimEnds) {
			if !c.waitLogged {
				c.waitLogged = true
				r.log.Info("The election controller assigned the lease to this process; starting when the previous holder's claim runs out by this clock",
					"in", c.claimEnds.Sub(now))
			}
			return actWait, c.claimEnds
		}
		if !c.takingUp {
			c.takingUp = true
			c.report(CandidacyCandidate)
			r.log.Info("Taking up the term the election controller assigned to this process")
		}
		return actAcquire, now
	case act == actWait || (!v.gone && leaserecord.Holder(v.lease) == self):
		// Held by another, or a claim of our own identity: as usual.
		return act, at
	case c.campaigning:
		return act, at
	}
	if c.freeSince.IsZero() {
		c.freeSince = now
	}
	if until := c.freeSince.Add(controllerGrace); now.Before(until) {
		return actWait, until
	}
	c.campaigning = true
	c.report(CandidacyNoController)
	r.log.Info("No election controller named a holder of the free lease; campaigning for it directly (is kube-apiserver's CoordinatedLeaderElection feature gate on?)",
		"waited", controllerGrace)
	return act, at
}
