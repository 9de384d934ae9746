package leasehold

import (
	"os"
	"strings"
	"testing"
)

// The README's Usage program is examples/quickstart/main.go, which the
// examples module compiles: the two must not drift apart.
func TestReadmeUsageIsTheCompiledProgram(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	prog, err := os.ReadFile("examples/quickstart/main.go")
	if err != nil {
		t.Fatal(err)
	}
	body := string(prog[strings.Index(string(prog), "package main"):])
	usage := string(readme)[strings.Index(string(readme), "## Usage"):]
	start := strings.Index(usage, "```go\n") + len("```go\n")
	end := start + strings.Index(usage[start:], "```")
	if got := usage[start:end]; got != body {
		t.Fatalf("README's Usage program differs from examples/quickstart/main.go; paste the file into the README.\nREADME:\n%s", got)
	}
	if n := strings.Count(body, "\n"); n > 60 {
		t.Errorf("the Usage program has %d lines; keep it short", n)
	}
}

// The callback contract's list of sentinel errors (docs/contract.md)
// names every exported Err of the package, so a new error cannot be left
// out of it.
func TestReadmeListsEverySentinelError(t *testing.T) {
	contract, err := os.ReadFile("docs/contract.md")
	if err != nil {
		t.Fatal(err)
	}
	text := string(contract)
	start := strings.Index(text, "Errors are sentinels for `errors.Is`")
	if start < 0 {
		t.Fatal("docs/contract.md has no list of sentinel errors")
	}
	list := text[start:]
	list = list[:strings.Index(list, "\n\n")]
	src, err := os.ReadFile("config.go")
	if err != nil {
		t.Fatal(err)
	}
	found := 0
	for _, line := range strings.Split(string(src), "\n") {
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, "Err") || !strings.Contains(line, "errors.New(") {
			continue
		}
		name := strings.Fields(line)[0]
		found++
		if !strings.Contains(list, "`"+name+"`") {
			t.Errorf("docs/contract.md's list of sentinel errors leaves out %s", name)
		}
	}
	if found < 10 {
		t.Fatalf("found only %d sentinel errors in config.go; has the declaration moved?", found)
	}
}
