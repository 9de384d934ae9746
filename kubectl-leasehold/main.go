// Command kubectl-leasehold is a kubectl plugin that shows and moves
// leadership held through coordination.k8s.io/v1 Leases. Put it on PATH
// and run it as `kubectl leasehold status|yield|watch`; see
// `kubectl leasehold --help`.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/pflag"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/klog/v2"

	"github.com/leasehold/leasehold/kubectl-leasehold/internal/plugin"
)

func main() {
	os.Exit(run())
}

func run() int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		// After the first Ctrl-C, a second one kills at once.
		<-ctx.Done()
		stop()
	}()

	cmd := plugin.NewCommand(genericiooptions.IOStreams{In: os.Stdin, Out: os.Stdout, ErrOut: os.Stderr})
	klogFlags := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(klogFlags)
	for _, name := range []string{"v", "vmodule"} {
		cmd.PersistentFlags().AddFlag(pflag.PFlagFromGoFlag(klogFlags.Lookup(name)))
	}
	defer klog.Flush()

	ctx = klog.NewContext(ctx, klog.Background().WithName("kubectl-leasehold"))
	if err := cmd.ExecuteContext(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "error: %v\n", err)
		return 1
	}
	return 0
}
