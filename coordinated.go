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

	"github.com/go-logr/logr"
	coordinationv1 "k8s.io/api/coordination/v1"
	coordinationv1beta1 "k8s.io/api/coordination/v1beta1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/version"
	"k8s.io/apimachinery/pkg/watch"
	coordinationv1client "k8s.io/client-go/kubernetes/typed/coordination/v1"
	coordinationv1beta1client "k8s.io/client-go/kubernetes/typed/coordination/v1beta1"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
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
//     steps down, so that the controller does not hand the Lease back to a
//     process that is leaving.
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
	e.coord = &coordination{cc: cc, lock: e.lock, clock: e.clock, t: e.t}
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

	// fallback is set when the LeaseCandidate API is not served: the
	// election is the plain one.
	fallback bool
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
	return c != nil && !c.fallback && lease != nil && holderOf(lease) == c.lock.Identity && lease.Spec.AcquireTime == nil
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
	*c = coordination{cc: c.cc, lock: c.lock, clock: c.clock, t: c.t}
	log := klog.FromContext(ctx)
	k := &candidacy{cc: c.cc, lock: c.lock, clock: c.clock, t: c.t, log: log,
		client: c.cc.Client.LeaseCandidates(c.lock.Namespace)}
	err := k.register(ctx)
	switch {
	case errors.Is(err, errCandidateAPIMissing):
		c.fallback = true
		log.Info("The LeaseCandidate API (coordination.k8s.io/v1beta1) is not served; campaigning without coordinated leader election")
		return ctx, func() {}
	case err != nil:
		log.Error(err, "Cannot register as a LeaseCandidate yet; retrying in the background. The election controller cannot pick this process meanwhile")
	default:
		log.Info("Registered as a LeaseCandidate; the election controller picks the leader",
			"binaryVersion", c.cc.BinaryVersion, "emulationVersion", c.cc.EmulationVersion, "strategy", c.cc.Strategy)
	}
	electorCtx, stopElector := context.WithCancel(context.WithoutCancel(ctx))
	serveCtx, stopServing := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer stopElector()
		k.serve(serveCtx)
		k.withdraw(ctx)
	}()
	return electorCtx, func() {
		stopServing()
		<-done
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
		switch holder := holderOf(v.lease); {
		case c.assigned(v.lease) && first:
			// The first version this process sees is the controller's
			// assignment: whoever held the Lease before is unknown, and
			// its work may still run. Wait a whole claim from now.
			c.claimEnds = v.observedAt.Add(max(claimDuration(v.lease, r.e.t.leaseDuration), r.e.t.leaseDuration))
		case v.gone || c.assigned(v.lease):
			// Keep the claim of the holder seen before.
		case holder == "" || holder == self:
			c.claimEnds = time.Time{}
		default:
			c.claimEnds = v.observedAt.Add(claimDuration(v.lease, r.e.t.leaseDuration))
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
			r.log.Info("Taking up the term the election controller assigned to this process")
		}
		return actAcquire, now
	case act == actWait || (!v.gone && holderOf(v.lease) == self):
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
	r.log.Info("No election controller named a holder of the free lease; campaigning for it directly (is kube-apiserver's CoordinatedLeaderElection feature gate on?)",
		"waited", controllerGrace)
	return act, at
}

// errCandidateAPIMissing is register's error when the server does not serve
// LeaseCandidates.
var errCandidateAPIMissing = errors.New("the LeaseCandidate API is not served")

// candidacy keeps one process's LeaseCandidate for one Run: it registers
// it, follows it with a watch, answers the controller's pings, renews it
// every candidateRenewEvery, and deletes it at the end. Its goroutine owns
// it.
type candidacy struct {
	cc     CandidateConfig
	lock   *LeaseLock
	clock  clock.WithTicker
	t      timings
	log    logr.Logger
	client coordinationv1beta1client.LeaseCandidateInterface

	// obj is the LeaseCandidate as last written or seen; nil when it must
	// be registered (again).
	obj *coordinationv1beta1.LeaseCandidate
	// renewAt is when the next periodic renewal is due.
	renewAt time.Time
}

// request bounds one request by the elector's request timeout. It is not
// cut short by ctx: a write that lands must be known.
func (k *candidacy) request(ctx context.Context) (context.Context, context.CancelFunc) {
	return withClockTimeout(context.WithoutCancel(ctx), k.clock, k.t.requestTimeout())
}

// register creates the LeaseCandidate, or updates the one a previous
// incarnation of this identity left behind.
func (k *candidacy) register(ctx context.Context) error {
	rctx, cancel := k.request(ctx)
	defer cancel()
	now := k.clock.Now()
	desired := &coordinationv1beta1.LeaseCandidate{
		ObjectMeta: metav1.ObjectMeta{Namespace: k.lock.Namespace, Name: k.lock.Identity},
		Spec: coordinationv1beta1.LeaseCandidateSpec{
			LeaseName:        k.lock.Name,
			BinaryVersion:    k.cc.BinaryVersion,
			EmulationVersion: k.cc.EmulationVersion,
			Strategy:         k.cc.Strategy,
			RenewTime:        &metav1.MicroTime{Time: now},
		},
	}
	got, err := k.client.Create(rctx, desired, metav1.CreateOptions{})
	switch {
	case err == nil:
		k.wrote(got)
		return nil
	case candidateAPIMissing(err):
		return errCandidateAPIMissing
	case !apierrors.IsAlreadyExists(err):
		return k.explain("create", err)
	}
	cur, err := k.client.Get(rctx, k.lock.Identity, metav1.GetOptions{})
	if err != nil {
		return k.explain("get", err)
	}
	if cur.Spec.LeaseName != k.lock.Name {
		return fmt.Errorf("LeaseCandidate %s/%s exists for Lease %q, not %q: in coordinated election the identity names the candidate, so it must be unique per process and Lease in the namespace",
			k.lock.Namespace, k.lock.Identity, cur.Spec.LeaseName, k.lock.Name)
	}
	cur.Spec.BinaryVersion, cur.Spec.EmulationVersion, cur.Spec.Strategy = desired.Spec.BinaryVersion, desired.Spec.EmulationVersion, desired.Spec.Strategy
	cur.Spec.RenewTime = &metav1.MicroTime{Time: answerTime(cur, now)}
	got, err = k.client.Update(rctx, cur, metav1.UpdateOptions{})
	if err != nil {
		return k.explain("update", err)
	}
	k.wrote(got)
	return nil
}

// wrote records a successful write of the LeaseCandidate.
func (k *candidacy) wrote(obj *coordinationv1beta1.LeaseCandidate) {
	k.obj = obj
	k.renewAt = k.clock.Now().Add(candidateRenewEvery)
}

// answerTime is the renewTime that answers a ping at now: never before the
// ping, which the controller stamped with its own clock, so that a clock
// running behind the controller's still counts as an answer.
func answerTime(obj *coordinationv1beta1.LeaseCandidate, now time.Time) time.Time {
	if p := obj.Spec.PingTime; p != nil && p.Time.After(now) {
		return p.Time
	}
	return now
}

// pinged reports whether the controller asks for an answer: a pingTime
// after the renewTime.
func pinged(obj *coordinationv1beta1.LeaseCandidate) bool {
	s := obj.Spec
	return s.PingTime != nil && (s.RenewTime == nil || s.PingTime.After(s.RenewTime.Time))
}

// renew writes a new renewTime, answering a ping if there is one. On a
// conflict it re-reads once and retries; a LeaseCandidate found deleted is
// registered again.
func (k *candidacy) renew(ctx context.Context) error {
	rctx, cancel := k.request(ctx)
	defer cancel()
	for attempt := 1; ; attempt++ {
		obj := k.obj.DeepCopy()
		obj.Spec.RenewTime = &metav1.MicroTime{Time: answerTime(obj, k.clock.Now())}
		got, err := k.client.Update(rctx, obj, metav1.UpdateOptions{})
		switch {
		case err == nil:
			k.wrote(got)
			return nil
		case apierrors.IsNotFound(err):
			k.obj = nil
			return fmt.Errorf("LeaseCandidate %s/%s was deleted; registering again", k.lock.Namespace, k.lock.Identity)
		case !apierrors.IsConflict(err) || attempt == 2:
			return k.explain("update", err)
		}
		cur, err := k.client.Get(rctx, k.lock.Identity, metav1.GetOptions{})
		if err != nil {
			if apierrors.IsNotFound(err) {
				k.obj = nil
			}
			return k.explain("get", err)
		}
		k.obj = cur
	}
}

// serve keeps the LeaseCandidate until ctx ends: registered, followed by a
// watch, pings answered at once, renewed every candidateRenewEvery.
func (k *candidacy) serve(ctx context.Context) {
	retry := newBackoff(k.clock, k.t.retryPeriod/4, 4*k.t.retryPeriod)
	failures := newErrorStreak(k.clock, k.log, "Cannot keep the LeaseCandidate; retrying with backoff")
	selector := fields.OneTermEqualSelector("metadata.name", k.lock.Identity).String()
	rv := ""
	for ctx.Err() == nil {
		var err error
		switch {
		case k.obj == nil:
			if err = k.register(ctx); err == nil {
				k.log.V(1).Info("Registered the LeaseCandidate again")
				rv = k.obj.ResourceVersion
			}
		case pinged(k.obj) || !k.clock.Now().Before(k.renewAt):
			err = k.renew(ctx)
		}
		if err == nil {
			var w watch.Interface
			w, err = k.client.Watch(ctx, metav1.ListOptions{FieldSelector: selector, ResourceVersion: rv, AllowWatchBookmarks: true})
			switch {
			case err == nil:
				failures.succeeded()
				opened := k.clock.Now()
				rv, err = k.follow(ctx, w, rv)
				if k.clock.Since(opened) >= k.t.retryPeriod {
					retry.reset()
				} else if err == nil && ctx.Err() == nil && !retry.wait(ctx) {
					// A watch the server ends at once: do not spin.
					return
				}
			case apierrors.IsResourceExpired(err) || apierrors.IsGone(err):
				rv, err = "", nil
			}
		}
		if err != nil && ctx.Err() == nil {
			failures.failed(err)
			if !retry.wait(ctx) {
				return
			}
		}
	}
}

// follow reads a watch of the LeaseCandidate until it closes, answering
// pings and renewing when due. It returns the resourceVersion to resume
// from, and an error when a write failed (the caller retries it) or the
// LeaseCandidate was deleted.
func (k *candidacy) follow(ctx context.Context, w watch.Interface, rv string) (string, error) {
	defer w.Stop()
	timer := k.clock.NewTimer(k.renewAt.Sub(k.clock.Now()))
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return rv, nil
		case <-timer.C():
			if err := k.renew(ctx); err != nil {
				return rv, err
			}
			timer.Reset(k.renewAt.Sub(k.clock.Now()))
		case ev, open := <-w.ResultChan():
			if !open {
				return rv, nil
			}
			switch ev.Type {
			case watch.Error:
				return "", nil
			case watch.Bookmark:
				if m, err := metaOf(ev.Object); err == nil {
					rv = m.GetResourceVersion()
				}
			case watch.Added, watch.Modified, watch.Deleted:
				obj, ok := ev.Object.(*coordinationv1beta1.LeaseCandidate)
				if !ok || obj.Name != k.lock.Identity {
					continue
				}
				rv = obj.ResourceVersion
				if ev.Type == watch.Deleted {
					k.obj = nil
					return "", fmt.Errorf("LeaseCandidate %s/%s was deleted; registering again", k.lock.Namespace, k.lock.Identity)
				}
				k.obj = obj
				if pinged(obj) {
					k.log.V(2).Info("Answering the election controller's ping", "pingTime", obj.Spec.PingTime.Time)
					if err := k.renew(ctx); err != nil {
						return rv, err
					}
					timer.Reset(k.renewAt.Sub(k.clock.Now()))
				}
			}
		}
	}
}

// withdraw deletes the LeaseCandidate, so that the controller stops
// considering this process.
func (k *candidacy) withdraw(ctx context.Context) {
	if k.obj == nil {
		return
	}
	rctx, cancel := k.request(ctx)
	defer cancel()
	opts := metav1.DeleteOptions{}
	if k.obj.UID != "" {
		opts.Preconditions = &metav1.Preconditions{UID: &k.obj.UID}
	}
	err := k.client.Delete(rctx, k.lock.Identity, opts)
	switch {
	case err == nil, apierrors.IsNotFound(err), apierrors.IsConflict(err):
		k.log.V(1).Info("Withdrew the LeaseCandidate")
	default:
		k.log.Error(err, "Cannot delete the LeaseCandidate; the election controller drops it 30 minutes after its last renewal")
	}
	k.obj = nil
}

// explain wraps an error of a request with verb on the LeaseCandidate. A
// 403 names the RBAC rule that is missing.
func (k *candidacy) explain(verb string, err error) error {
	if apierrors.IsForbidden(err) {
		return fmt.Errorf("%s LeaseCandidate %s/%s: RBAC forbids %q: grant create, get, update, watch and delete on coordination.k8s.io leasecandidates in namespace %q: %w",
			verb, k.lock.Namespace, k.lock.Identity, verb, k.lock.Namespace, err)
	}
	return fmt.Errorf("%s LeaseCandidate %s/%s: %w", verb, k.lock.Namespace, k.lock.Identity, err)
}

// candidateAPIMissing reports whether err is the 404 of a server that does
// not serve the resource at all: no details, unlike the 404 of a missing
// object or namespace.
func candidateAPIMissing(err error) bool {
	if !apierrors.IsNotFound(err) {
		return false
	}
	var status apierrors.APIStatus
	if !errors.As(err, &status) {
		return false
	}
	d := status.Status().Details
	return d == nil || (d.Name == "" && d.Kind == "")
}

// holderKeepingLeases writes a released Lease's holderIdentity as "" rather
// than leaving it out, as client-go does. kube-apiserver v1.37's election
// controller dereferences the holder of a Lease that has candidates without
// a nil check, and a Lease released without the field makes it panic and
// the API server exit.
type holderKeepingLeases struct {
	coordinationv1client.LeasesGetter
}

// Leases implements coordinationv1client.LeasesGetter.
func (g holderKeepingLeases) Leases(namespace string) coordinationv1client.LeaseInterface {
	return holderKeepingLease{g.LeasesGetter.Leases(namespace)}
}

type holderKeepingLease struct {
	coordinationv1client.LeaseInterface
}

// Update implements coordinationv1client.LeaseInterface.
func (l holderKeepingLease) Update(ctx context.Context, lease *coordinationv1.Lease, opts metav1.UpdateOptions) (*coordinationv1.Lease, error) {
	if lease.Spec.HolderIdentity == nil {
		lease = lease.DeepCopy()
		lease.Spec.HolderIdentity = ptr.To("")
	}
	return l.LeaseInterface.Update(ctx, lease, opts)
}
