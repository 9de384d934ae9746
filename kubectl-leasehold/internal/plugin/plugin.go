// Package plugin implements kubectl-leasehold, a kubectl plugin that shows
// and moves leadership held through coordination.k8s.io/v1 Leases: by
// leasehold electors, by client-go's leaderelection, or by anything else
// that writes a Lease.
//
// It has three commands:
//
//	status [NAME]          a table of Leases: holder, lease duration, time since
//	                       the last renewal as seen now, transitions, pending
//	                       preferred holder, shard group
//	yield NAME [--to ID]   ask the holder to hand the Lease over, wait for it
//	watch NAME             a live timeline of holder changes and renewals
//
// NewCommand builds them on the standard kubeconfig flags of
// k8s.io/cli-runtime (--kubeconfig, --context, -n, ...).
package plugin

import (
	"time"

	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/kubernetes"

	"github.com/leasehold/leasehold"
	"github.com/leasehold/leasehold/shard"
)

const (
	// PreferredHolderAnnotation, set on a Lease, asks its leasehold leader
	// to hand the Lease over to the identity it names
	// (leasehold.PreferredHolderAnnotation). yield sets it; status shows
	// it as the pending preferred holder.
	PreferredHolderAnnotation = leasehold.PreferredHolderAnnotation

	// AnyHolder as the value of PreferredHolderAnnotation asks the leader
	// to hand over to whichever other candidate comes first. yield without
	// --to sets it; leasehold reads an empty value the same way.
	AnyHolder = "*"

	// ShardGroupLabel marks the Leases of a leasehold shard group (its
	// assignment Lease and its members' Leases); its value is the group's
	// name (shard.LabelGroup).
	ShardGroupLabel = shard.LabelGroup
)

// Options holds what every command needs: where the cluster is, and where
// to print. Build one with NewOptions.
type Options struct {
	// ConfigFlags are the standard kubeconfig flags.
	ConfigFlags *genericclioptions.ConfigFlags
	// IOStreams is where commands print (In is not read).
	IOStreams genericiooptions.IOStreams

	// newClient and namespace resolve the cluster; tests replace them.
	newClient func() (kubernetes.Interface, error)
	namespace func() (string, error)
	// now is the local clock; tests replace it.
	now func() time.Time
}

// NewOptions returns Options that read the kubeconfig through the standard
// flags and print to streams.
func NewOptions(streams genericiooptions.IOStreams) *Options {
	o := &Options{
		ConfigFlags: genericclioptions.NewConfigFlags(true),
		IOStreams:   streams,
		now:         time.Now,
	}
	o.newClient = o.clientFromFlags
	o.namespace = o.namespaceFromFlags
	return o
}
