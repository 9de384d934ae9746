package shard

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"
	coordinationv1client "k8s.io/client-go/kubernetes/typed/coordination/v1"
	"k8s.io/utils/clock"

	"github.com/leasehold/leasehold"
	"github.com/leasehold/leasehold/internal/timing"
)

// Config configures a Member. Every member of a group must use the same
// Namespace, Group and Shards, and the same timings.
type Config struct {
	// Namespace of the group's Leases. Required.
	Namespace string

	// Group names the group's Leases: the assignment Lease is named
	// Group, each member's Lease MemberLeaseName(Group, Identity), and
	// all carry the label LabelGroup=Group. A lowercase DNS name of at
	// most 63 characters. Required.
	Group string

	// Identity is unique per process, as leasehold.LeaseLock.Identity
	// (leasehold.DefaultIdentity gives a safe value). Two processes with
	// one identity are detected: Run returns an error wrapping
	// leasehold.ErrIdentityConflict. Required.
	Identity string

	// Client reaches the API server, typically
	// clientset.CoordinationV1(). It must honour resourceVersion
	// (compare-and-swap); client-go's fake clientset does not, and Run
	// refuses it with ErrNoCompareAndSwap (use leaseholdtest).
	// Required.
	Client coordinationv1client.LeasesGetter

	// Shards is K, the number of shards, 1..MaxShards. It must be the
	// same in every member for the group's lifetime. Required.
	Shards int

	// LeaseDuration, RenewDeadline and RetryPeriod time the membership
	// as they time a leasehold election, with the same defaults (15s,
	// 10s, 2s) and validation (a positive safety margin).
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration

	// ReleaseOnCancel hands this member's shards over when Run's context
	// is cancelled: each shard's work is cancelled, and as soon as it
	// returns the shard is acknowledged in the assignment and restarted
	// by another member, in milliseconds. Without it, the other members
	// take the shards over once this member's Lease expires.
	ReleaseOnCancel bool

	// OnShardStarted runs the work of one shard, in its own goroutine,
	// when this member starts running it. ctx ends when the shard moves
	// away (or the membership ends); the work must return promptly
	// after that. If it returns or panics while the shard is still
	// this member's, it is started again after RetryPeriod. Required.
	OnShardStarted func(ctx context.Context, shard int)

	// OnShardStopped is called once per run of a shard, after that run's
	// OnShardStarted returned and before the shard is handed to another
	// member. Optional.
	OnShardStopped func(shard int)

	// Metrics receives the member's measurements: shards owned, moves
	// by cause, handover times, members seen. Optional; metrics/prometheus
	// implements it.
	Metrics Metrics

	// Clock drives every timer. Default: the real clock. Tests pass a
	// fake clock (k8s.io/utils/clock/testing).
	Clock clock.WithTicker
}

// Sentinel errors, for errors.Is. Configuration errors wrap
// leasehold.ErrInvalidConfig.
var (
	// ErrNoCompareAndSwap is returned by Run when the Lease API returns
	// objects without a resourceVersion, as client-go's fake clientset
	// does: without compare-and-swap two members could both record
	// themselves as a shard's owner.
	ErrNoCompareAndSwap = errors.New("shard: the Lease API does not support compare-and-swap (empty resourceVersion)")

	// ErrShardCountMismatch is returned by Run when the group's
	// assignment was made for another number of shards.
	ErrShardCountMismatch = errors.New("shard: the group's assignment has another number of shards")

	// ErrAssignmentDeleted was returned by Run when the group's
	// assignment Lease was deleted or replaced while this member ran.
	//
	// Deprecated: Run no longer returns it. A member that learns that the
	// assignment Lease was deleted or replaced stops every shard and stays
	// in the group; the assignment is created again, and no shard starts
	// anywhere before its previous owner's work can have stopped (see the
	// package documentation).
	ErrAssignmentDeleted = errors.New("shard: the group's assignment Lease was deleted or replaced")

	// ErrRefused is returned by Run when the API server refuses a
	// request of the group for a reason that retrying it cannot fix:
	// RBAC forbids it (403), it is invalid (400, 422), or what it needs
	// is not there (404 for the group's list, or for the create of the
	// assignment Lease: the namespace does not exist). The error names
	// the request and wraps the API server's error. Transient failures
	// (no answer, timeouts, 5xx, 429) never end Run: they are retried
	// with backoff.
	ErrRefused = errors.New("shard: the API server refuses a request of the group")

	// ErrBadAssignment is returned by Run when the assignment Lease's
	// annotation cannot be read.
	ErrBadAssignment = errors.New("shard: the group's assignment Lease cannot be read")
)

// withDefaults fills in the documented defaults, in one place.
func (cfg Config) withDefaults() Config {
	if cfg.LeaseDuration == 0 {
		cfg.LeaseDuration = leasehold.DefaultLeaseDuration
	}
	if cfg.RenewDeadline == 0 {
		cfg.RenewDeadline = leasehold.DefaultRenewDeadline
	}
	if cfg.RetryPeriod == 0 {
		cfg.RetryPeriod = leasehold.DefaultRetryPeriod
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	return cfg
}

// validate reports every problem at once, in one error wrapping
// leasehold.ErrInvalidConfig. The timings follow the election's own rules
// and messages (internal/timing).
func (cfg Config) validate() error {
	var problems []string
	add := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }

	if cfg.Namespace == "" {
		add(`Namespace is "": set the namespace of the group's Leases (leasehold.InClusterNamespace reads the pod's own)`)
	}
	switch {
	case cfg.Group == "":
		add(`Group is "": set the group's name, e.g. "my-controller"; it names the group's Leases`)
	case len(cfg.Group) > validation.LabelValueMaxLength || len(validation.IsDNS1123Subdomain(cfg.Group)) > 0:
		add("Group is %q: it must be a lowercase DNS name of at most %d characters (letters, digits, '-', '.'), because it names a Lease and is a label value",
			cfg.Group, validation.LabelValueMaxLength)
	}
	if cfg.Identity == "" {
		add(`Identity is "": set a value unique to this process (leasehold.DefaultIdentity returns hostname_random)`)
	}
	if cfg.Client == nil {
		add("Client is nil: set it to clientset.CoordinationV1()")
	}
	if cfg.Shards < 1 || cfg.Shards > MaxShards {
		add("Shards is %d: set the number of shards, 1..%d, the same in every member for the group's lifetime", cfg.Shards, MaxShards)
	}
	if cfg.OnShardStarted == nil {
		add("OnShardStarted is nil: set it to the function that runs one shard's work")
	}
	problems = append(problems, timing.Problems(cfg.LeaseDuration, cfg.RenewDeadline, cfg.RetryPeriod)...)
	if len(problems) > 0 {
		return fmt.Errorf("%w: shard: %s", leasehold.ErrInvalidConfig, strings.Join(problems, "; "))
	}
	return nil
}

// timings is the validated timing of a member.
type timings struct {
	leaseDuration, renewDeadline, retryPeriod time.Duration
}

// requestTimeout bounds one request by the election's one rule,
// leasehold.RequestTimeout: a hung request fails with time left to retry
// before the renew deadline.
func (t timings) requestTimeout() time.Duration { return leasehold.RequestTimeout(t.renewDeadline) }
