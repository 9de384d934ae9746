// Command mutate checks that the unit tests of every package with contract
// points catch what they claim: it breaks the library on purpose, one hand-written mutation at a
// time (mutations*.go, one file per package, at least one mutation per
// contract point), and runs the tests of the package (Pkg) that should
// catch each break.
//
// It works on a scratch copy of the repository (never on the checkout):
// by default the working tree's files (tracked and untracked, without
// ignored ones), or with -rev a committed revision. It first runs every
// listed test on the unmutated copy, which must pass; then, per
// mutation, it replaces the exact original snippet (which must occur
// exactly once in its file), runs
//
//	go test -v -count=1 -timeout <timeout> -run '^(<tests>)$' ./<pkg>

// from the module that holds <pkg>
//
// and restores the file. It prints a table and exits non-zero if any
// contract mutation SURVIVED, DOES-NOT-APPLY (the code changed under the
// snippet: update mutations*.go) or does not build.
//
// Usage (from anywhere in the repository):
//
//	go run ./hack/mutate [-rev HEAD] [-only REGEXP] [-timeout 5m] [-keep] [-v] [-list]
//
// With -sim N it asks another question: which mutations of the root
// package (the elector the simulator drives) does the deterministic
// simulation of test/sim catch on its own, in N seeds? It runs
// test/cmd/sim instead of the unit tests, reports each mutation as caught
// (with the first invariant that failed) or missed, and with -out writes
// that table as markdown. Missed mutations do not fail this mode.
package main

import (
	"archive/tar"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"text/tabwriter"
	"time"
)

// mutation is one deliberate break of the library.
type mutation struct {
	// Name identifies the mutation in the table and for -only.
	Name string
	// Point is the contract point it breaks (doc.go's wording).
	Point string
	// File is relative to the repository root.
	File string
	// Original must occur exactly once in File; Mutated replaces it.
	Original, Mutated string
	// Pkg is the directory of the package whose tests catch it,
	// relative to the repository root ("" for the root package). The
	// tests run in the module that holds it (the nearest go.mod).
	Pkg string
	// Tests are the tests of Pkg expected to catch it (at least one of
	// them must fail).
	Tests []string
	// Contract mutations must be caught. Others are reported only.
	Contract bool
}

type result struct {
	m       mutation
	status  string // caught, SURVIVED, DOES-NOT-APPLY, BUILD-FAILED
	failing []string
	took    time.Duration
	output  string
}

func main() {
	rev := flag.String("rev", "", "mutate this committed revision (git archive) instead of the working tree")
	only := flag.String("only", "", "run only the mutations whose name matches this regexp")
	timeout := flag.Duration("timeout", 5*time.Minute, "go test -timeout per run")
	keep := flag.Bool("keep", false, "keep the scratch copy")
	parallel := flag.Int("parallel", 2, "mutations run at once, each in its own scratch copy")
	verbose := flag.Bool("v", false, "print the test output of every run")
	list := flag.Bool("list", false, "list the mutations and exit")
	markdown := flag.Bool("markdown", false, "print docs/mutations.md (the table of every mutation and the tests that catch it) and exit")
	simSeeds := flag.Int("sim", 0, "instead of the unit tests, run this many seeds of the simulation (test/cmd/sim) on each mutation of the root package")
	out := flag.String("out", "", "with -sim: also write the table, as markdown, to this file")
	check := flag.Bool("check", false, "only check that every mutation's snippet occurs exactly once in its file (naming the file that has it when another does), and exit")
	flag.Parse()
	if *check {
		os.Exit(checkSnippets(allMutations()))
	}

	ms := allMutations()
	if *simSeeds > 0 {
		var root []mutation
		for _, m := range ms {
			if m.Pkg == "" {
				root = append(root, m)
			}
		}
		ms = root
	}
	if *only != "" {
		re, err := regexp.Compile(*only)
		if err != nil {
			fatalf("-only: %v", err)
		}
		var sel []mutation
		for _, m := range ms {
			if re.MatchString(m.Name) {
				sel = append(sel, m)
			}
		}
		ms = sel
	}
	if *markdown {
		fmt.Print(markdownTable(allMutations()))
		return
	}
	if *list {
		for _, m := range ms {
			fmt.Printf("%-28s %-14s %s: %s\n    %s\n", m.Name, m.File, pkgName(m.Pkg), strings.Join(m.Tests, ","), m.Point)
		}
		return
	}
	if len(ms) == 0 {
		fatalf("no mutation selected")
	}

	root, err := gitOut("", "rev-parse", "--show-toplevel")
	if err != nil {
		fatalf("not in a git repository: %v", err)
	}
	root = strings.TrimSpace(root)
	scratch, err := os.MkdirTemp("", "leasehold-mutate-")
	if err != nil {
		fatalf("%v", err)
	}
	if *keep {
		fmt.Println("scratch copy:", scratch)
	} else {
		defer os.RemoveAll(scratch)
	}
	src := "working tree of " + root
	if *rev != "" {
		err = copyRevision(root, *rev, scratch)
		src = *rev + " of " + root
		if c, e := gitOut(root, "log", "-1", "--format=%h %s", *rev); e == nil {
			src = strings.TrimSpace(c)
			if len(src) > 72 {
				src = src[:72] + "..."
			}
		}
	} else {
		err = copyWorkingTree(root, scratch)
	}
	if err != nil {
		fatalf("copying the repository: %v", err)
	}
	fmt.Printf("mutating a copy of %s in %s\n", src, scratch)

	// Every snippet must apply before anything runs.
	originals := map[string][]byte{}
	applies := map[string]bool{}
	for _, m := range ms {
		b, ok := originals[m.File]
		if !ok {
			b, err = os.ReadFile(filepath.Join(scratch, m.File))
			if err != nil && !errors.Is(err, os.ErrNotExist) {
				fatalf("%v", err)
			}
			originals[m.File] = b
		}
		applies[m.Name] = bytes.Count(b, []byte(m.Original)) == 1
	}

	// Baseline: the listed tests pass on the unmutated copy, package by
	// package.
	byPkg := map[string][]string{}
	seen := map[string]bool{}
	for _, m := range ms {
		for _, t := range m.Tests {
			if key := m.Pkg + "\x00" + t; !seen[key] {
				seen[key] = true
				byPkg[m.Pkg] = append(byPkg[m.Pkg], t)
			}
		}
	}
	pkgs := make([]string, 0, len(byPkg))
	for p := range byPkg {
		pkgs = append(pkgs, p)
	}
	sort.Strings(pkgs)
	if *simSeeds > 0 {
		fmt.Printf("baseline: %d seeds of the simulation on the unmutated copy ... ", *simSeeds)
		start := time.Now()
		if out, err := simRun(scratch, *simSeeds, *timeout); err != nil {
			fmt.Printf("FAIL (%v)\n%s\n", time.Since(start).Round(time.Second), tail(out, 60))
			os.Exit(2)
		}
		fmt.Printf("ok (%v)\n", time.Since(start).Round(time.Second))
		pkgs = nil
	}
	for _, pkg := range pkgs {
		all := byPkg[pkg]
		sort.Strings(all)
		fmt.Printf("baseline: %d tests of %s on the unmutated copy ... ", len(all), pkgName(pkg))
		start := time.Now()
		out, err := goTest(scratch, pkg, all, *timeout)
		if err != nil {
			fmt.Printf("FAIL (%v)\n%s\n", time.Since(start).Round(time.Second), tail(out, 60))
			fmt.Println("The tests fail without any mutation: fix them first; no mutation result would mean anything.")
			os.Exit(2)
		}
		passed := map[string]bool{}
		for _, m := range regexp.MustCompile(`(?m)^--- PASS: (\S+)`).FindAllStringSubmatch(out, -1) {
			passed[m[1]] = true
		}
		var missing []string
		for _, t := range all {
			if !passed[t] {
				missing = append(missing, t)
			}
		}
		if len(missing) > 0 {
			fmt.Printf("FAIL\nThese tests did not run (renamed or removed? update hack/mutate/mutations*.go): %s\n", strings.Join(missing, ", "))
			os.Exit(2)
		}
		fmt.Printf("ok (%v)\n", time.Since(start).Round(time.Second))
	}

	// Workers, each with its own copy of the scratch tree (the first
	// uses the scratch itself), take mutations in order.
	workers := max(1, min(*parallel, len(ms)))
	copies := []string{scratch}
	for i := 1; i < workers; i++ {
		dir, err := os.MkdirTemp("", "leasehold-mutate-")
		if err != nil {
			fatalf("%v", err)
		}
		defer os.RemoveAll(dir)
		if err := os.CopyFS(dir, os.DirFS(scratch)); err != nil {
			fatalf("copying the scratch tree: %v", err)
		}
		copies = append(copies, dir)
	}
	results := make([]result, len(ms))
	next := make(chan int)
	var mu sync.Mutex
	var wg sync.WaitGroup
	done := 0
	for _, dir := range copies {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				m := ms[i]
				r := run(dir, m, applies[m.Name], originals[m.File], *timeout, *simSeeds)
				results[i] = r
				mu.Lock()
				done++
				fmt.Printf("[%d/%d] %s ... %s (%v)\n", done, len(ms), m.Name, r.status, r.took.Round(time.Second))
				if *verbose || r.status == "BUILD-FAILED" {
					fmt.Println(tail(r.output, 40))
				}
				mu.Unlock()
			}
		}()
	}
	for i := range ms {
		next <- i
	}
	close(next)
	wg.Wait()

	fmt.Println()
	if *simSeeds > 0 {
		table := simTable(results, *simSeeds, src)
		fmt.Print(table)
		if *out != "" {
			if err := os.WriteFile(*out, []byte(table), 0o644); err != nil {
				fatalf("%v", err)
			}
		}
		return
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "MUTATION\tFILE\tRESULT\tFAILING TEST")
	bad := 0
	for _, r := range results {
		failing := strings.Join(r.failing, ",")
		if failing == "" {
			failing = "-"
		}
		status := r.status
		if r.status != "caught" {
			if r.m.Contract {
				bad++
			} else {
				status += " (not a contract point)"
			}
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", r.m.Name, r.m.File, status, failing)
	}
	w.Flush()
	fmt.Println()
	if bad > 0 {
		fmt.Printf("FAIL: %d contract mutation(s) not caught. SURVIVED: a test is missing or too weak. DOES-NOT-APPLY: the code changed; update the snippet in hack/mutate/mutations*.go. BUILD-FAILED: the replacement no longer compiles.\n", bad)
		os.Exit(1)
	}
	fmt.Printf("ok: all %d mutations caught\n", len(results))
}

// markdownTable renders docs/mutations.md: every mutation, the contract
// point it breaks and the tests expected to catch it, package by package.
func markdownTable(ms []mutation) string {
	var b strings.Builder
	b.WriteString("# Mutations\n\n")
	b.WriteString("Generated by `go run ./hack/mutate -markdown > docs/mutations.md`; a test fails when it drifts.\n")
	b.WriteString("`make mutate` applies each one alone to a scratch copy and runs the tests named here;\n")
	b.WriteString("at least one of them must fail.\n\n")
	fmt.Fprintf(&b, "%d mutations.\n\n", len(ms))
	b.WriteString("| Package | Mutation | Contract point it breaks | Caught by |\n|---|---|---|---|\n")
	for _, m := range ms {
		tests := make([]string, len(m.Tests))
		for i, t := range m.Tests {
			tests[i] = "`" + t + "`"
		}
		fmt.Fprintf(&b, "| %s | `%s` | %s | %s |\n", pkgName(m.Pkg), m.Name, strings.ReplaceAll(m.Point, "|", "\\|"), strings.Join(tests, ", "))
	}
	return b.String()
}

// allMutations lists every package's mutations: mutations_<pkg>.go, one
// file per package with contract points.
func allMutations() []mutation {
	var all []mutation
	for _, list := range [][]mutation{
		mutations, coordinatedMutations, shardMutations, fenceMutations,
		controllerRuntimeMutations, pluginMutations, leaseholdtestMutations,
	} {
		all = append(all, list...)
	}
	return all
}

// run applies m alone to the scratch copy, runs its tests, and restores
// the file.
func run(scratch string, m mutation, applies bool, original []byte, timeout time.Duration, simSeeds int) result {
	r := result{m: m}
	if !applies {
		r.status = "DOES-NOT-APPLY"
		return r
	}
	path := filepath.Join(scratch, m.File)
	mutated := bytes.Replace(original, []byte(m.Original), []byte(m.Mutated), 1)
	if err := os.WriteFile(path, mutated, 0o644); err != nil {
		fatalf("%v", err)
	}
	defer func() {
		if err := os.WriteFile(path, original, 0o644); err != nil {
			fatalf("restoring %s: %v", m.File, err)
		}
	}()
	start := time.Now()
	var out string
	var err error
	if simSeeds > 0 {
		out, err = simRun(scratch, simSeeds, timeout)
	} else {
		out, err = goTest(scratch, m.Pkg, m.Tests, timeout)
	}
	r.took, r.output = time.Since(start), out
	switch {
	case err == nil:
		r.status = "SURVIVED"
	case buildFailed(out):
		r.status = "BUILD-FAILED"
	case simSeeds > 0:
		r.status = "caught"
		r.failing = simFailures(out)
	default:
		r.status = "caught"
		r.failing = failingTests(out)
	}
	return r
}

// simRun runs seeds of the simulation (test/cmd/sim) in the scratch copy,
// stopping at the first failing seed, without shrinking.
func simRun(scratch string, seeds int, timeout time.Duration) (string, error) {
	cmd := exec.Command("go", "run", "./cmd/sim", "-seeds", fmt.Sprint(seeds), "-shrink=false", "-stop-at-first")
	cmd.Dir = filepath.Join(scratch, "test")
	cmd.WaitDelay = time.Second
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	if err := cmd.Start(); err != nil {
		return "", err
	}
	timer := time.AfterFunc(timeout, func() { cmd.Process.Kill() })
	defer timer.Stop()
	err := cmd.Wait()
	return buf.String(), err
}

var simViolationRE = regexp.MustCompile(`(?m)^\s*VIOLATION \S+ (\S+) `)

// simFailures names the invariant of the simulation's first violation
// and its seed.
func simFailures(out string) []string {
	if m := simViolationRE.FindStringSubmatch(out); m != nil {
		seed := regexp.MustCompile(`=== FAIL seed (\d+)`).FindStringSubmatch(out)
		if seed != nil {
			return []string{m[1] + " (seed " + seed[1] + ")"}
		}
		return []string{m[1]}
	}
	return []string{"(the simulation failed without a violation: " + strings.TrimSpace(tail(out, 1)) + ")"}
}

// simTable renders what the simulation alone caught, as markdown.
func simTable(results []result, seeds int, src string) string {
	var b strings.Builder
	caught := 0
	for _, r := range results {
		if r.status == "caught" {
			caught++
		}
	}
	b.WriteString("# Mutations the simulation catches on its own\n\n")
	b.WriteString("Generated by `go run ./hack/mutate -sim " + fmt.Sprint(seeds) + " -out docs/sim-mutations.md` on " + src + ".\n")
	b.WriteString("Each mutation of the root package (the elector that `test/sim` drives) is applied alone, and the\n")
	fmt.Fprintf(&b, "simulation runs %d seeds on it, with no unit test involved.\n\n", seeds)
	fmt.Fprintf(&b, "**Caught by the simulation alone: %d of %d (%d%%).**\n\n", caught, len(results), 100*caught/max(1, len(results)))
	b.WriteString("| Mutation | Contract point it breaks | Simulation | First invariant broken |\n|---|---|---|---|\n")
	for _, r := range results {
		status := r.status
		if status == "SURVIVED" {
			status = "missed"
		}
		failing := strings.Join(r.failing, ", ")
		if failing == "" {
			failing = "-"
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s |\n", r.m.Name, strings.ReplaceAll(r.m.Point, "|", "\\|"), status, failing)
	}
	return b.String()
}

// pkgName is how the table names a mutation's package.
func pkgName(pkg string) string {
	if pkg == "" {
		return "the root package"
	}
	return pkg
}

// goTest runs tests of the package in directory pkg (relative to the
// scratch copy's root) from the module that holds it: the nearest
// directory at or above pkg with a go.mod.
func goTest(scratch, pkg string, tests []string, timeout time.Duration) (string, error) {
	dir := filepath.Join(scratch, filepath.FromSlash(pkg))
	mod := dir
	for {
		if _, err := os.Stat(filepath.Join(mod, "go.mod")); err == nil {
			break
		}
		if mod == scratch || filepath.Dir(mod) == mod {
			return "", fmt.Errorf("no go.mod at or above %s", pkg)
		}
		mod = filepath.Dir(mod)
	}
	rel, err := filepath.Rel(mod, dir)
	if err != nil {
		return "", err
	}
	cmd := exec.Command("go", "test", "-v", "-count=1", "-timeout", timeout.String(),
		"-run", "^("+strings.Join(tests, "|")+")$", "./"+filepath.ToSlash(rel))
	cmd.Dir = mod
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	err = cmd.Run()
	return buf.String(), err
}

var (
	failRE    = regexp.MustCompile(`(?m)^\s*--- FAIL: (\S+)`)
	startRE   = regexp.MustCompile(`(?m)^=== RUN\s+(\S+)`)
	endRE     = regexp.MustCompile(`(?m)^\s*--- (?:PASS|FAIL|SKIP): (\S+)`)
	timeoutRE = regexp.MustCompile(`(?m)^panic: test timed out after`)
)

// failingTests names the top-level tests that failed, or that were running
// when the test binary timed out or crashed (a panic in another
// goroutine), marked so.
func failingTests(out string) []string {
	top := func(name string) string { return strings.SplitN(name, "/", 2)[0] }
	var names []string
	seen := map[string]bool{}
	add := func(n string) {
		if !seen[n] {
			seen[n] = true
			names = append(names, n)
		}
	}
	for _, m := range failRE.FindAllStringSubmatch(out, -1) {
		add(top(m[1]))
	}
	if len(names) > 0 {
		return names
	}
	why := "(crashed)"
	if timeoutRE.MatchString(out) {
		why = "(timed out)"
	}
	ended := map[string]bool{}
	for _, m := range endRE.FindAllStringSubmatch(out, -1) {
		ended[m[1]] = true
	}
	for _, m := range startRE.FindAllStringSubmatch(out, -1) {
		if !ended[m[1]] && !strings.Contains(m[1], "/") {
			add(m[1] + why)
		}
	}
	if len(names) == 0 {
		add(why)
	}
	return names
}

func buildFailed(out string) bool {
	return strings.Contains(out, "[build failed]") || strings.Contains(out, "[setup failed]") ||
		strings.Contains(out, "\nvet: ") || strings.HasPrefix(out, "# ")
}

// copyWorkingTree copies the tracked and untracked (not ignored) files of
// the working tree as they are on disk.
func copyWorkingTree(root, dst string) error {
	out, err := gitOut(root, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
	if err != nil {
		return err
	}
	for _, rel := range strings.Split(out, "\x00") {
		if rel == "" {
			continue
		}
		src := filepath.Join(root, rel)
		fi, err := os.Lstat(src)
		if errors.Is(err, os.ErrNotExist) {
			continue // deleted in the working tree
		}
		if err != nil {
			return err
		}
		to := filepath.Join(dst, rel)
		if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
			return err
		}
		switch {
		case fi.Mode()&os.ModeSymlink != 0:
			link, err := os.Readlink(src)
			if err != nil {
				return err
			}
			if err := os.Symlink(link, to); err != nil {
				return err
			}
		case fi.Mode().IsRegular():
			b, err := os.ReadFile(src)
			if err != nil {
				return err
			}
			if err := os.WriteFile(to, b, fi.Mode().Perm()); err != nil {
				return err
			}
		}
	}
	return nil
}

// copyRevision extracts a committed revision with git archive.
func copyRevision(root, rev, dst string) error {
	cmd := exec.Command("git", "archive", "--format=tar", rev)
	cmd.Dir = root
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	pipe, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	tr := tar.NewReader(pipe)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		to := filepath.Join(dst, filepath.FromSlash(hdr.Name))
		if !strings.HasPrefix(to, filepath.Clean(dst)+string(os.PathSeparator)) {
			return fmt.Errorf("archive entry %q escapes the scratch directory", hdr.Name)
		}
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(to, 0o755); err != nil {
				return err
			}
		case tar.TypeSymlink:
			if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
				return err
			}
			if err := os.Symlink(hdr.Linkname, to); err != nil {
				return err
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
				return err
			}
			f, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, os.FileMode(hdr.Mode).Perm())
			if err != nil {
				return err
			}
			if _, err := io.Copy(f, tr); err != nil {
				f.Close()
				return err
			}
			if err := f.Close(); err != nil {
				return err
			}
		}
	}
	if err := cmd.Wait(); err != nil {
		return fmt.Errorf("git archive %s: %v: %s", rev, err, stderr.String())
	}
	return nil
}

func gitOut(dir string, args ...string) (string, error) {
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("git %s: %v: %s", strings.Join(args, " "), err, stderr.String())
	}
	return string(out), nil
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "mutate: "+format+"\n", args...)
	os.Exit(2)
}

// checkSnippets reports every mutation whose Original does not occur
// exactly once in its File, in the working tree, with the file of the same
// directory that does hold it once, if any (after code moved between
// files). It returns the exit status.
func checkSnippets(ms []mutation) int {
	root, err := gitOut("", "rev-parse", "--show-toplevel")
	if err != nil {
		fatalf("not in a git repository: %v", err)
	}
	root = strings.TrimSpace(root)
	bad := 0
	for _, m := range ms {
		b, _ := os.ReadFile(filepath.Join(root, m.File))
		if bytes.Count(b, []byte(m.Original)) == 1 {
			continue
		}
		bad++
		where := "no file of its directory holds it once"
		files, _ := filepath.Glob(filepath.Join(root, filepath.Dir(m.File), "*.go"))
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			if c, _ := os.ReadFile(f); bytes.Count(c, []byte(m.Original)) == 1 {
				rel, _ := filepath.Rel(root, f)
				where = "now in " + rel
			}
		}
		fmt.Printf("%s: not once in %s: %s\n", m.Name, m.File, where)
	}
	if bad > 0 {
		return 1
	}
	fmt.Printf("ok: all %d snippets apply\n", len(ms))
	return 0
}
