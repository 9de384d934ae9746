package main

import (
	"os"
	"testing"
)

// docs/mutations.md is the output of -markdown: regenerate it when a
// mutation changes.
func TestMutationsDocIsGenerated(t *testing.T) {
	got, err := os.ReadFile("../../docs/mutations.md")
	if err != nil {
		t.Fatal(err)
	}
	if want := markdownTable(allMutations()); string(got) != want {
		t.Fatal("docs/mutations.md is stale: run go run ./hack/mutate -markdown > docs/mutations.md")
	}
}

// Every mutation names a package's tests and a snippet to replace, and
// no two share a name (-only selects by name).
func TestMutationsAreWellFormed(t *testing.T) {
	seen := map[string]bool{}
	for _, m := range allMutations() {
		if m.Name == "" || m.File == "" || m.Original == "" || len(m.Tests) == 0 || m.Point == "" {
			t.Errorf("mutation %q is missing a field", m.Name)
		}
		if m.Original == m.Mutated {
			t.Errorf("mutation %q changes nothing", m.Name)
		}
		if seen[m.Name] {
			t.Errorf("two mutations named %q", m.Name)
		}
		seen[m.Name] = true
	}
}
