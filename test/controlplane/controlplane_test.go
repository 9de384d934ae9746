package controlplane

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
)

func TestStartWithoutBinaries(t *testing.T) {
	t.Setenv(EnvDir, t.TempDir())
	cp, err := Start()
	if err == nil {
		_ = cp.Stop()
		t.Fatal("Start succeeded without binaries")
	}
	if !errors.Is(err, ErrBinariesMissing) || !strings.HasSuffix(err.Error(), BuildHint) {
		t.Fatalf("Start: %v; want ErrBinariesMissing ending with %q", err, BuildHint)
	}
}

func TestBinDir(t *testing.T) {
	t.Setenv(EnvDir, "") // empty means unset
	dir, err := BinDir()
	if err != nil {
		t.Fatal(err)
	}
	// From test/controlplane, the repository root is two levels up.
	want, _ := filepath.Abs(filepath.Join("..", "..", "bin", "controlplane"))
	if dir != want {
		t.Errorf("BinDir() = %s, want %s", dir, want)
	}
}
