// Command slowapi runs the "slow API server" bench phase of issue #25 in
// virtual time (package test/slowapi): leasehold, client-go's
// leaderelection and controller-runtime's manager election, each in its
// own synctest world per latency profile (60 virtual minutes each, then
// the same worlds for 24 hours each, for the rates too small to show in
// one hour), prints the tables, and rewrites
// the section of BENCHMARKS.md between <!-- slowapi:begin --> and
// <!-- slowapi:end --> (appending it if missing).
//
//	cd test && go run ./cmd/slowapi [-duration 60m] [-long 24h|0] [-seed 1] [-out path|-] [-profiles a,b] [-libraries a,b]
//	cd test && go run ./cmd/slowapi -trace write-stalls/leasehold [-v 2]   # one world's requests, works and logs; writes nothing
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	"k8s.io/klog/v2"

	"github.com/leasehold/leasehold/test/bench"
	"github.com/leasehold/leasehold/test/slowapi"
)

var (
	duration  = flag.Duration("duration", 60*time.Minute, "virtual time of each world (at least 10m)")
	long      = flag.Duration("long", 24*time.Hour, "virtual time of each world of the long run, after the main one (0: no long run)")
	seed      = flag.Uint64("seed", 1, "seed of the latency draws and stall schedules")
	out       = flag.String("out", "", `BENCHMARKS.md to rewrite the section of (default <repo root>/BENCHMARKS.md; "-" for none)`)
	profiles  = flag.String("profiles", "", "comma-separated profiles (default all: healthy,loaded,brownout,write-stalls)")
	libraries = flag.String("libraries", "", "comma-separated libraries (default all: leasehold,client-go,controller-runtime)")
	trace     = flag.String("trace", "", "profile/library: run that world alone and print its requests, works and the library's log; writes nothing")
	verbosity = flag.Int("v", 0, "with -trace, the log verbosity of the library")
)

func main() {
	flag.Parse()
	klog.SetLogger(logr.Discard())
	ps, ls, err := selection()
	if err != nil {
		fmt.Fprintln(os.Stderr, "slowapi:", err)
		os.Exit(2)
	}
	if *trace != "" {
		testing.Main(func(string, string) (bool, error) { return true, nil },
			[]testing.InternalTest{{Name: "SlowAPITrace", F: func(t *testing.T) { traceWorld(t, ps, ls) }}}, nil, nil)
	}
	path := *out
	if path == "" {
		root, err := bench.FindRoot()
		if err != nil {
			fmt.Fprintln(os.Stderr, "slowapi:", err)
			os.Exit(2)
		}
		path = filepath.Join(root, "BENCHMARKS.md")
	}
	// synctest.Test needs a *testing.T: run the worlds as one test.
	testing.Main(func(string, string) (bool, error) { return true, nil },
		[]testing.InternalTest{{Name: "SlowAPI", F: func(t *testing.T) { run(t, ps, ls, path) }}}, nil, nil)
}

func selection() ([]slowapi.Profile, []slowapi.Library, error) {
	if *trace != "" {
		p, l, ok := strings.Cut(*trace, "/")
		if !ok {
			return nil, nil, fmt.Errorf("-trace %q: want profile/library", *trace)
		}
		*profiles, *libraries = p, l
	} else if *duration < 10*time.Minute {
		return nil, nil, fmt.Errorf("-duration %v: at least 10m", *duration)
	}
	ps := slowapi.Profiles
	if *profiles != "" {
		ps = nil
		for _, name := range strings.Split(*profiles, ",") {
			p, ok := slowapi.ProfileByName(strings.TrimSpace(name))
			if !ok {
				return nil, nil, fmt.Errorf("unknown profile %q", name)
			}
			ps = append(ps, p)
		}
	}
	ls := slowapi.Libraries
	if *libraries != "" {
		ls = nil
		for _, name := range strings.Split(*libraries, ",") {
			l := slowapi.Library(strings.TrimSpace(name))
			switch l {
			case slowapi.Leasehold, slowapi.ClientGo, slowapi.ControllerRuntime:
			default:
				return nil, nil, fmt.Errorf("unknown library %q", name)
			}
			ls = append(ls, l)
		}
	}
	return ps, ls, nil
}

func run(t *testing.T, ps []slowapi.Profile, ls []slowapi.Library, path string) {
	started := time.Now()
	rep := runAll(t, ps, ls, *duration)
	if *long > 0 {
		rep.Long = runAll(t, ps, ls, *long)
	}
	fmt.Println(rep.Table())
	if path != "-" {
		if err := slowapi.WriteSection(path, rep.Markdown()); err != nil {
			t.Fatalf("write %s: %v", path, err)
		}
		fmt.Printf("wrote the slowapi section of %s\n", path)
	}
	fmt.Printf("slowapi took %v of wall time\n", time.Since(started).Round(time.Millisecond))
}

// runAll runs every profile with every library, each world for d.
func runAll(t *testing.T, ps []slowapi.Profile, ls []slowapi.Library, d time.Duration) *slowapi.Report {
	rep := &slowapi.Report{Seed: *seed, Duration: d, Started: time.Now()}
	for _, p := range ps {
		for _, l := range ls {
			res := slowapi.Run(t, slowapi.Config{Profile: p, Library: l, Duration: d, Seed: *seed})
			fmt.Fprintf(os.Stderr, "%-12s %-18s %v virtual in %v\n", p.Name, l, d, res.Wall.Round(time.Millisecond))
			rep.Results = append(rep.Results, res)
		}
	}
	rep.Wall = time.Since(rep.Started)
	return rep
}

// traceWorld runs one world and prints what happened in it.
func traceWorld(t *testing.T, ps []slowapi.Profile, ls []slowapi.Library) {
	printf := func(format string, args ...any) { fmt.Printf(format+"\n", args...) }
	log := funcr.New(func(prefix, args string) { fmt.Println("          log:", prefix, args) }, funcr.Options{Verbosity: *verbosity})
	res := slowapi.Run(t, slowapi.Config{Profile: ps[0], Library: ls[0], Duration: *duration, Seed: *seed, Trace: printf, Log: log})
	rep := &slowapi.Report{Seed: *seed, Duration: *duration, Started: time.Now(), Results: []*slowapi.Result{res}}
	fmt.Println()
	fmt.Println(rep.Table())
}
