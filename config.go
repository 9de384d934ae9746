package leasehold

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/utils/clock"

	"github.com/leasehold/leasehold/internal/timing"
)

// Defaults for the three timing knobs. They match client-go's and
// controller-runtime's, so a migrated controller keeps its behaviour.
const (
	DefaultLeaseDuration = 15 * time.Second
	DefaultRenewDeadline = 10 * time.Second
	DefaultRetryPeriod   = 2 * time.Second
)

// DefaultStepDownTimeout bounds a step-down whose work does not return.
// It is below Kubernetes' default termination grace period (30s), so a pod
// whose work ignores its ctx exits on its own, its lease unreleased but
// its work gone, before the kubelet's SIGKILL.
const DefaultStepDownTimeout = 20 * time.Second

// Config configures an Elector. The zero value of every optional field is
// usable: New fills in the documented default. Every default, the derived
// ones included, is set in one place.
type Config struct {
	// Lock is the Lease this elector campaigns for. Required.
	Lock *LeaseLock

	// LeaseDuration is how long a holder's claim lasts without a change
	// observed by a follower. A follower takes over only after its own
	// clock has seen no change to the Lease for the holder's
	// leaseDurationSeconds. It must be a whole number of seconds, at
	// least 1s, because the Lease stores whole seconds. Default 15s.
	LeaseDuration time.Duration

	// RenewDeadline is how long the leader keeps leading without a
	// successful renewal, measured from when the last successful renew
	// request was sent. When it passes, the work's context is cancelled.
	// Default 10s.
	RenewDeadline time.Duration

	// RetryPeriod is the interval between renewals, and between attempts
	// when a write fails. Default 2s.
	RetryPeriod time.Duration

	// Callbacks are called on leadership changes. OnStartedLeading is
	// required. See the package documentation for the contract.
	Callbacks Callbacks

	// ReleaseOnCancel clears the holder of the Lease when Run's context is
	// cancelled, once OnStartedLeading has returned, so that another
	// candidate takes over at once instead of after LeaseDuration.
	ReleaseOnCancel bool

	// Rejoin makes Run campaign again after a term ends with an error
	// (lease lost, work returned or panicked), instead of returning. An
	// identity conflict or a step-down timeout always ends Run. A Yield
	// never ends Run, whatever Rejoin says.
	//
	// OnStartedLeading is then called once per term: it must build what
	// it needs (informers, queues, the controller itself) afresh inside,
	// because a controller whose Run has returned has usually shut its
	// queue down and does nothing if run again.
	Rejoin bool

	// StepDownTimeout bounds how long a step-down (Run's ctx cancelled, or
	// a Yield) waits for OnStartedLeading to return, counted from the
	// cancellation (or the Yield). The elector keeps renewing meanwhile
	// and logs the wait every few seconds; the release, too, is tried only
	// within the bound. Run returns within it (plus one request in
	// flight at the bound). When it passes, it stops renewing without releasing (the work may
	// still run, so nobody may start before the lease expires), calls
	// OnStoppedLeading and Run returns an error wrapping
	// ErrStepDownTimeout: return from main then, and the process exits
	// with its work before another leader starts. client-go instead lets
	// Run return at once with the work still running. Default
	// DefaultStepDownTimeout (20s).
	StepDownTimeout time.Duration

	// Name names this election in logs, events and metrics.
	// Default: "<namespace>/<name>" of the Lease.
	Name string

	// Clock drives every timer of the elector. Default: the real clock.
	// Tests pass a fake clock (k8s.io/utils/clock/testing).
	Clock clock.WithTicker

	// SharedWatch, when set, follows the Lease through a watch shared with
	// other electors of this process in the same namespace, instead of a
	// watch of its own. For processes that run many elections. Default:
	// nil, one watch per elector, scoped to its Lease.
	SharedWatch *SharedWatch

	// Metrics receives the elector's measurements. Default: none.
	// See the metrics/prometheus package for a Prometheus implementation.
	Metrics Metrics
}

// timings is the validated, defaulted timing of one elector.
type timings struct {
	leaseDuration time.Duration
	renewDeadline time.Duration
	retryPeriod   time.Duration
}

// safetyMargin is the time between the instant the leader must have
// stopped (its renew deadline) and the earliest instant a follower may
// start (the lease expiry), less one retry period of slack for the
// follower's observation lag. The old leader's work gets this long to
// return after its context is cancelled on loss.
func (t timings) safetyMargin() time.Duration {
	return t.leaseDuration - t.renewDeadline - t.retryPeriod
}

// requestTimeout bounds one of the elector's API requests: the one rule,
// RequestTimeout.
func (t timings) requestTimeout() time.Duration {
	return RequestTimeout(t.renewDeadline)
}

// withDefaults returns cfg with every zero optional field set to its
// documented default. It is the only place defaults are applied.
func (cfg Config) withDefaults() Config {
	if cfg.LeaseDuration == 0 {
		cfg.LeaseDuration = DefaultLeaseDuration
	}
	if cfg.RenewDeadline == 0 {
		cfg.RenewDeadline = DefaultRenewDeadline
	}
	if cfg.RetryPeriod == 0 {
		cfg.RetryPeriod = DefaultRetryPeriod
	}
	if cfg.StepDownTimeout == 0 {
		cfg.StepDownTimeout = DefaultStepDownTimeout
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	if cfg.Metrics == nil {
		cfg.Metrics = noMetrics{}
	}
	if cfg.Name == "" && cfg.Lock != nil {
		cfg.Name = cfg.Lock.Namespace + "/" + cfg.Lock.Name
	}
	return cfg
}

// validate reports every problem of a defaulted config at once, as one
// error wrapping ErrInvalidConfig.
func (cfg Config) validate() error {
	var problems []string
	add := func(format string, args ...any) {
		problems = append(problems, fmt.Sprintf(format, args...))
	}

	switch {
	case cfg.Lock == nil:
		add("Lock is nil: set Config.Lock to a *LeaseLock naming the Lease to campaign for")
	default:
		l := cfg.Lock
		if l.Client == nil {
			add("Lock.Client is nil: set it to clientset.CoordinationV1()")
		}
		switch {
		case l.Namespace == "":
			add(`Lock.Namespace is "": set the namespace of the Lease (InClusterNamespace reads the pod's own)`)
		case len(validation.IsDNS1123Label(l.Namespace)) > 0:
			add("Lock.Namespace is %q: a namespace must be a DNS label (%s); e.g. %q",
				l.Namespace, strings.Join(validation.IsDNS1123Label(l.Namespace), "; "), dnsName(l.Namespace))
		}
		switch {
		case l.Name == "":
			add(`Lock.Name is "": set the name of the Lease, e.g. "my-controller"`)
		case len(validation.IsDNS1123Subdomain(l.Name)) > 0:
			add("Lock.Name is %q: a Lease name must be a DNS subdomain (%s); e.g. %q",
				l.Name, strings.Join(validation.IsDNS1123Subdomain(l.Name), "; "), dnsName(l.Name))
		}
		switch {
		case l.Identity == "":
			add(`Lock.Identity is "": set a value unique to this process (DefaultIdentity returns hostname_random)`)
		case strings.TrimSpace(l.Identity) == "":
			add("Lock.Identity is %q, only whitespace: set a value unique to this process (DefaultIdentity returns hostname_random)", l.Identity)
		case strings.TrimSpace(l.Identity) != l.Identity:
			add("Lock.Identity is %q: remove the leading or trailing whitespace (%q)", l.Identity, strings.TrimSpace(l.Identity))
		}
	}
	if cfg.SharedWatch != nil && cfg.Lock != nil && cfg.SharedWatch.namespace != cfg.Lock.Namespace {
		add("SharedWatch watches namespace %q but Lock.Namespace is %q: use one SharedWatch per namespace", cfg.SharedWatch.namespace, cfg.Lock.Namespace)
	}
	if cfg.Callbacks.OnStartedLeading == nil {
		add("Callbacks.OnStartedLeading is nil: set it to the function that does the leader's work")
	}

	durations := []struct {
		name string
		d    time.Duration
	}{
		{"LeaseDuration", cfg.LeaseDuration},
		{"RenewDeadline", cfg.RenewDeadline},
		{"RetryPeriod", cfg.RetryPeriod},
		{"StepDownTimeout", cfg.StepDownTimeout},
	}
	negative := false
	for _, f := range durations {
		if f.d < 0 {
			negative = true
			add("%s is %v: durations must not be negative; use 0 for the default", f.name, f.d)
		}
	}
	if negative {
		return invalidConfig(problems)
	}

	problems = append(problems, timing.Problems(cfg.LeaseDuration, cfg.RenewDeadline, cfg.RetryPeriod)...)
	if len(problems) > 0 {
		return invalidConfig(problems)
	}
	return nil
}

// dnsName suggests a valid DNS name close to s: lower case, with every
// other character turned into '-'.
func dnsName(s string) string {
	b := []byte(strings.ToLower(strings.TrimSpace(s)))
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
			b[i] = '-'
		}
	}
	return strings.Trim(string(b), "-.")
}

func invalidConfig(problems []string) error {
	return fmt.Errorf("%w: %s", ErrInvalidConfig, strings.Join(problems, "; "))
}

// Sentinel errors. Test for them with errors.Is.
var (
	// ErrInvalidConfig wraps every error New returns for a bad Config.
	ErrInvalidConfig = errors.New("leasehold: invalid config")

	// ErrLeaderLost is wrapped by Run's error when a term ended because
	// the lease was lost: the renew deadline passed, or another holder
	// was seen.
	ErrLeaderLost = errors.New("leasehold: leader lost")

	// ErrIdentityConflict is wrapped by Run's error when another live
	// process renews the Lease under this elector's identity.
	ErrIdentityConflict = errors.New("leasehold: identity conflict")

	// ErrWorkReturned is wrapped by Run's error when OnStartedLeading
	// returned while the elector still led and Run's context was live.
	ErrWorkReturned = errors.New("leasehold: OnStartedLeading returned while leading")

	// ErrWorkPanicked is wrapped by Run's error when OnStartedLeading
	// panicked. The panic is recovered and the term ends.
	ErrWorkPanicked = errors.New("leasehold: OnStartedLeading panicked")

	// ErrWorkOutlivedLease is wrapped by Run's error, and returned by
	// Check, when OnStartedLeading had not returned within the safety
	// margin after the lease was lost.
	ErrWorkOutlivedLease = errors.New("leasehold: OnStartedLeading outlived the lease")

	// ErrAlreadyRunning is returned by Run when another Run of the same
	// Elector has not returned yet.
	ErrAlreadyRunning = errors.New("leasehold: Run is already running on this Elector")

	// ErrAPIUnreachable is returned by Check when every request to the
	// API server has failed for longer than LeaseDuration plus the
	// tolerance. The elector keeps retrying with backoff meanwhile.
	ErrAPIUnreachable = errors.New("leasehold: API server unreachable")

	// ErrForbidden is returned by Check when RBAC has forbidden every
	// write of the Lease for longer than LeaseDuration plus the
	// tolerance. The error names the missing verb.
	ErrForbidden = errors.New("leasehold: RBAC forbids writing the lease")

	// ErrStepDownTimeout is wrapped by Run's error, and by Yield's, when
	// OnStartedLeading had not returned StepDownTimeout after its context
	// was cancelled. The elector stopped renewing without releasing: exit
	// the process so that the work stops before the lease expires.
	ErrStepDownTimeout = errors.New("leasehold: OnStartedLeading did not return within StepDownTimeout")

	// ErrNotLeading is wrapped by Yield's error when this process does
	// not lead.
	ErrNotLeading = errors.New("leasehold: not leading")

	// ErrLeaseRefused is returned by Check when the API server has
	// refused every write of the Lease for longer than LeaseDuration plus
	// the tolerance for a reason retrying cannot fix, other than RBAC: the
	// namespace does not exist, or the Lease is invalid. The error names
	// the cause.
	ErrLeaseRefused = errors.New("leasehold: the API server refuses the lease")

	// ErrRenewStalled is returned by Check when the elector believes it
	// leads but has not renewed within RenewDeadline plus the tolerance.
	ErrRenewStalled = errors.New("leasehold: renewals stalled")
)
