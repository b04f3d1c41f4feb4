package sandbox

import (
	"os"
	"path/filepath"
	"testing"
)

// A sandbox is used once a run dir is in its .agentkernel dir; the launch
// session's own files there do not count, and a symlink planted for the
// run dir is not followed.
func TestRefUsed(t *testing.T) {
	root := t.TempDir()
	ref := Ref{AllocID: "a1", Task: "sandbox", HostAllocDir: root}
	check := func(want bool) {
		t.Helper()
		used, err := ref.Used()
		if err != nil {
			t.Fatal(err)
		}
		if used != want {
			t.Fatalf("Used() = %v, want %v", used, want)
		}
	}
	check(false) // no alloc dir yet
	dir := filepath.Join(root, "alloc", runDirName)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"session.log", ".session-42"} {
		if err := os.WriteFile(filepath.Join(dir, f), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(t.TempDir(), filepath.Join(dir, "planted")); err != nil {
		t.Fatal(err)
	}
	check(false)
	if err := os.Mkdir(filepath.Join(dir, "r1"), 0o755); err != nil {
		t.Fatal(err)
	}
	check(true)
}
