package plugin

import (
	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericiooptions"
)

// NewCommand returns the kubectl-leasehold command, with the status, yield
// and watch subcommands and the standard kubeconfig flags, printing to
// streams. Run it with ExecuteContext; the context's cancellation (Ctrl-C)
// stops watch and yield, and its klog logger receives the debug logs.
func NewCommand(streams genericiooptions.IOStreams) *cobra.Command {
	return newRootCommand(NewOptions(streams))
}

func newRootCommand(o *Options) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "kubectl-leasehold",
		Short: "See and move leader election held through Leases",
		Long: `See and move leader election held through coordination.k8s.io/v1 Leases:
who holds each Lease and how recently it was renewed (status), a live timeline
of one Lease (watch), and a handoff on request to another candidate (yield,
for leasehold electors).`,
		Annotations:   map[string]string{cobra.CommandDisplayNameAnnotation: "kubectl leasehold"},
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	o.ConfigFlags.AddFlags(cmd.PersistentFlags())
	cmd.SetOut(o.IOStreams.Out)
	cmd.SetErr(o.IOStreams.ErrOut)
	cmd.AddCommand(newStatusCommand(o), newYieldCommand(o), newWatchCommand(o))
	return cmd
}
