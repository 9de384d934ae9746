package plugin

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"
	"sigs.k8s.io/yaml"
)

// LeaseStatus is one Lease as status shows it. It is also the schema of
// `status -o json|yaml`: one object for `status NAME`, a list of them under
// "items" otherwise.
type LeaseStatus struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// Holder is spec.holderIdentity; empty when nobody holds the Lease.
	Holder string `json:"holder"`
	// LeaseDurationSeconds is spec.leaseDurationSeconds (0 if unset).
	LeaseDurationSeconds int32             `json:"leaseDurationSeconds"`
	AcquireTime          *metav1.MicroTime `json:"acquireTime,omitempty"`
	RenewTime            *metav1.MicroTime `json:"renewTime,omitempty"`
	// ObservedAt is the local time at which the Lease was read.
	ObservedAt metav1.MicroTime `json:"observedAt"`
	// SinceRenewal is ObservedAt minus RenewTime: how long ago the holder
	// last renewed, as seen now. RenewTime comes from the holder's clock,
	// so a skewed clock shows here (negative: the holder's clock is ahead).
	SinceRenewal *metav1.Duration `json:"sinceRenewal,omitempty"`
	// Expired says the Lease has a holder whose claim ran out by the same
	// reckoning (SinceRenewal > LeaseDurationSeconds): a candidate may take
	// it over.
	Expired bool `json:"expired"`
	// Transitions is spec.leaseTransitions.
	Transitions int32 `json:"leaseTransitions"`
	// PreferredHolder is the pending handoff that yield asked for (the
	// value of the leasehold.dev/preferred-holder annotation; "*" means
	// any other candidate).
	PreferredHolder string `json:"preferredHolder,omitempty"`
	// SpecPreferredHolder is spec.preferredHolder (coordinated leader
	// election, set by the API server's leader-election controller).
	SpecPreferredHolder string `json:"specPreferredHolder,omitempty"`
	// Strategy is spec.strategy.
	Strategy string `json:"strategy,omitempty"`
	// ShardGroup is the value of the leasehold.dev/shard-group label.
	ShardGroup string `json:"shardGroup,omitempty"`
	// ShardAssignment is set on the assignment Lease of a shard group: the
	// group's members and their shards. ShardAssignmentError says why it
	// could not be read.
	ShardAssignment      *ShardGroupStatus `json:"shardAssignment,omitempty"`
	ShardAssignmentError string            `json:"shardAssignmentError,omitempty"`
	ResourceVersion      string            `json:"resourceVersion"`
}

// StatusList is the output of `status -o json|yaml` without a NAME.
type StatusList struct {
	Items []LeaseStatus `json:"items"`
}

// requestedHolder returns the handoff the Lease's annotation requests: ""
// for none, AnyHolder for any other candidate (the value "*", or an empty
// value, as leasehold reads it), else the identity named.
func requestedHolder(l *coordinationv1.Lease) string {
	v, ok := l.Annotations[PreferredHolderAnnotation]
	if !ok {
		return ""
	}
	if v = strings.TrimSpace(v); v == "" {
		return AnyHolder
	}
	return v
}

// statusOf reads the status of l as observed at now.
func statusOf(l *coordinationv1.Lease, now time.Time) LeaseStatus {
	s := LeaseStatus{
		Namespace:       l.Namespace,
		Name:            l.Name,
		AcquireTime:     l.Spec.AcquireTime,
		RenewTime:       l.Spec.RenewTime,
		ObservedAt:      metav1.NewMicroTime(now),
		ShardGroup:      l.Labels[ShardGroupLabel],
		PreferredHolder: requestedHolder(l),
		ResourceVersion: l.ResourceVersion,
	}
	if h := l.Spec.HolderIdentity; h != nil {
		s.Holder = *h
	}
	if d := l.Spec.LeaseDurationSeconds; d != nil {
		s.LeaseDurationSeconds = *d
	}
	if t := l.Spec.LeaseTransitions; t != nil {
		s.Transitions = *t
	}
	if p := l.Spec.PreferredHolder; p != nil {
		s.SpecPreferredHolder = *p
	}
	if st := l.Spec.Strategy; st != nil {
		s.Strategy = string(*st)
	}
	if r := l.Spec.RenewTime; r != nil {
		since := now.Sub(r.Time).Round(time.Millisecond)
		s.SinceRenewal = &metav1.Duration{Duration: since}
		s.Expired = s.Holder != "" && since > time.Duration(s.LeaseDurationSeconds)*time.Second
	}
	return s
}

type statusOptions struct {
	*Options
	allNamespaces bool
	output        string
	name          string
}

func newStatusCommand(o *Options) *cobra.Command {
	so := &statusOptions{Options: o}
	cmd := &cobra.Command{
		Use:   "status [NAME]",
		Short: "Show who holds each Lease, how recently it was renewed, and pending handoffs",
		Long: `Show the Leases of a namespace (or of all namespaces with -A), or the one named.

Columns:
  HOLDER       spec.holderIdentity (<none>: released)
  DURATION     spec.leaseDurationSeconds
  RENEWED      how long ago renewTime was, by this machine's clock now;
               "(expired)" once that exceeds DURATION while someone holds it
  TRANSITIONS  spec.leaseTransitions
  PREFERRED    a pending handoff: the leasehold.dev/preferred-holder
               annotation that 'yield' sets ("*": any other candidate), and
               spec.preferredHolder, marked "(spec)", if set
  GROUP        the leasehold.dev/shard-group label (shown if any Lease has it)
-o wide adds ACQUIRED (time since acquireTime), RENEW TIME and STRATEGY.

For each leasehold shard group (its assignment Lease, named after the group),
a second table lists the members: shards OWNED (running) and TARGETED (to run
once the moves settle) out of SHARDS, and MEMBERSHIP, the state of the
member's own Lease; <unowned> counts the shards nobody runs. -o wide adds the
owned shard numbers and the member Lease names.`,
		Example: `  kubectl leasehold status -n kube-system
  kubectl leasehold status my-controller -o yaml
  kubectl leasehold status -A -o wide`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 {
				so.name = args[0]
			}
			return so.run(cmd.Context())
		},
	}
	cmd.Flags().BoolVarP(&so.allNamespaces, "all-namespaces", "A", false, "list the Leases of all namespaces")
	cmd.Flags().StringVarP(&so.output, "output", "o", "", "output format: wide, json or yaml")
	return cmd
}

func (o *statusOptions) run(ctx context.Context) error {
	switch o.output {
	case "", "wide", "json", "yaml":
	default:
		return &hintError{err: fmt.Errorf("unknown output format %q", o.output), hint: "Fix: use -o wide, -o json or -o yaml."}
	}
	client, err := o.newClient()
	if err != nil {
		return err
	}
	ns := metav1.NamespaceAll
	if !o.allNamespaces {
		if ns, err = o.namespace(); err != nil {
			return err
		}
	}
	logger := klog.FromContext(ctx).WithValues("namespace", ns)
	leases := client.CoordinationV1().Leases(ns)

	var items []coordinationv1.Lease
	switch {
	case o.name != "" && !o.allNamespaces:
		l, err := leases.Get(ctx, o.name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return notFound(ctx, client, ns, o.name)
		}
		if err != nil {
			return apiError(err, "get", ns)
		}
		items = []coordinationv1.Lease{*l}
	default:
		opts := metav1.ListOptions{}
		if o.name != "" {
			opts.FieldSelector = fields.OneTermEqualSelector("metadata.name", o.name).String()
		}
		list, err := leases.List(ctx, opts)
		if err != nil {
			return apiError(err, "list", ns)
		}
		for _, l := range list.Items {
			if o.name == "" || l.Name == o.name {
				items = append(items, l)
			}
		}
		if o.name != "" && len(items) == 0 {
			return &hintError{err: fmt.Errorf("no Lease named %q in any namespace", o.name),
				hint: "Fix: check the name; 'kubectl leasehold status -A' lists every Lease."}
		}
	}
	now := o.now()
	logger.V(2).Info("Read Leases", "count", len(items))
	byName := o.leasesAround(ctx, client, items, o.name == "")

	statuses := make([]LeaseStatus, 0, len(items))
	for i := range items {
		s := statusOf(&items[i], now)
		if isAssignment(&items[i]) {
			g, err := shardGroupOf(&items[i], byName[items[i].Namespace], now)
			if err != nil {
				s.ShardAssignmentError = err.Error()
			}
			s.ShardAssignment = g
		}
		statuses = append(statuses, s)
	}
	slices.SortFunc(statuses, func(a, b LeaseStatus) int {
		if c := strings.Compare(a.Namespace, b.Namespace); c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	})

	out := o.IOStreams.Out
	switch o.output {
	case "json", "yaml":
		var v any = StatusList{Items: statuses}
		if o.name != "" && len(statuses) == 1 {
			v = statuses[0]
		}
		return printStructured(out, o.output, v)
	}
	if len(statuses) == 0 {
		if o.allNamespaces {
			fmt.Fprintln(o.IOStreams.ErrOut, "No Leases found.")
		} else {
			fmt.Fprintf(o.IOStreams.ErrOut, "No Leases found in namespace %s.\n", ns)
		}
		return nil
	}
	if err := printTable(out, statuses, o.allNamespaces, o.output == "wide"); err != nil {
		return err
	}
	return printShardGroups(out, statuses, o.allNamespaces, o.output == "wide")
}

// leasesAround returns, per namespace of a shard group's assignment Lease
// among items, that namespace's Leases by namespace/name, to find the
// members' Leases. With complete, items already hold them all; otherwise
// (status NAME) it lists the namespace, and leaves it out (membership
// unknown) if that fails.
func (o *statusOptions) leasesAround(ctx context.Context, client kubernetes.Interface, items []coordinationv1.Lease, complete bool) map[string]map[string]*coordinationv1.Lease {
	byName := map[string]map[string]*coordinationv1.Lease{}
	add := func(ls []coordinationv1.Lease) {
		for i := range ls {
			ns := ls[i].Namespace
			if byName[ns] == nil {
				byName[ns] = map[string]*coordinationv1.Lease{}
			}
			byName[ns][leaseRef(ns, ls[i].Name)] = &ls[i]
		}
	}
	if complete {
		add(items)
		return byName
	}
	for i := range items {
		ns := items[i].Namespace
		if _, done := byName[ns]; done || !isAssignment(&items[i]) {
			continue
		}
		list, err := client.CoordinationV1().Leases(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			klog.FromContext(ctx).V(1).Info("Cannot list the shard group's member Leases", "namespace", ns, "err", err)
			byName[ns] = nil
			continue
		}
		add(list.Items)
	}
	return byName
}

func printStructured(w io.Writer, format string, v any) error {
	b, err := json.MarshalIndent(v, "", "    ")
	if err != nil {
		return err
	}
	if format == "yaml" {
		if b, err = yaml.JSONToYAML(b); err != nil {
			return err
		}
	} else {
		b = append(b, '\n')
	}
	_, err = w.Write(b)
	return err
}

type column struct {
	header string
	cell   func(*LeaseStatus) string
}

func printTable(w io.Writer, statuses []LeaseStatus, withNamespace, wide bool) error {
	var cols []column
	if withNamespace {
		cols = append(cols, column{"NAMESPACE", func(s *LeaseStatus) string { return s.Namespace }})
	}
	cols = append(cols,
		column{"NAME", func(s *LeaseStatus) string { return s.Name }},
		column{"HOLDER", func(s *LeaseStatus) string { return orNone(s.Holder) }},
		column{"DURATION", durationCell},
		column{"RENEWED", renewedCell},
		column{"TRANSITIONS", func(s *LeaseStatus) string { return fmt.Sprint(s.Transitions) }},
		column{"PREFERRED", preferredCell},
	)
	if slices.ContainsFunc(statuses, func(s LeaseStatus) bool { return s.ShardGroup != "" }) {
		cols = append(cols, column{"GROUP", func(s *LeaseStatus) string { return orNone(s.ShardGroup) }})
	}
	if wide {
		cols = append(cols,
			column{"ACQUIRED", acquiredCell},
			column{"RENEW TIME", func(s *LeaseStatus) string {
				if s.RenewTime == nil {
					return none
				}
				return s.RenewTime.UTC().Format("2006-01-02T15:04:05.000Z")
			}},
			column{"STRATEGY", func(s *LeaseStatus) string { return orNone(s.Strategy) }},
		)
	}

	tw := tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
	row := make([]string, len(cols))
	for i, c := range cols {
		row[i] = c.header
	}
	fmt.Fprintln(tw, strings.Join(row, "\t"))
	for i := range statuses {
		for j, c := range cols {
			row[j] = c.cell(&statuses[i])
		}
		fmt.Fprintln(tw, strings.Join(row, "\t"))
	}
	return tw.Flush()
}

func durationCell(s *LeaseStatus) string {
	if s.LeaseDurationSeconds == 0 {
		return none
	}
	return seconds(s.LeaseDurationSeconds)
}

func renewedCell(s *LeaseStatus) string {
	if s.SinceRenewal == nil {
		return "never"
	}
	d := s.SinceRenewal.Duration
	if d < 0 {
		return "in " + humanDuration(-d) + " (clock skew)"
	}
	cell := humanDuration(d) + " ago"
	if s.Expired {
		cell += " (expired)"
	}
	return cell
}

func acquiredCell(s *LeaseStatus) string {
	if s.AcquireTime == nil {
		return none
	}
	return humanDuration(s.ObservedAt.Sub(s.AcquireTime.Time)) + " ago"
}

func preferredCell(s *LeaseStatus) string {
	var parts []string
	switch s.PreferredHolder {
	case "":
	case AnyHolder:
		parts = append(parts, "* (anyone)")
	default:
		parts = append(parts, s.PreferredHolder)
	}
	if s.SpecPreferredHolder != "" {
		parts = append(parts, s.SpecPreferredHolder+" (spec)")
	}
	if len(parts) == 0 {
		return none
	}
	return strings.Join(parts, ", ")
}
