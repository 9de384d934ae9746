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
