package sandbox

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The hand-out mark is made once, outside the dirs a sandbox sees, empty and
// readable by its owner only; a second Mark fails, and Marked finds it.
func TestMark(t *testing.T) {
	root := t.TempDir()
	ref := Ref{AllocID: "a1", Task: "sandbox", HostAllocDir: filepath.Join(root, "a1")}
	for _, d := range []string{"alloc", "sandbox/local"} {
		if err := os.MkdirAll(filepath.Join(ref.HostAllocDir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if marked, err := ref.Marked(); err != nil || marked {
		t.Fatalf("Marked() before Mark = %v, %v", marked, err)
	}
	if err := ref.Mark(); err != nil {
		t.Fatal(err)
	}
	if marked, err := ref.Marked(); err != nil || !marked {
		t.Fatalf("Marked() after Mark = %v, %v", marked, err)
	}
	if err := ref.Mark(); !errors.Is(err, ErrMarked) {
		t.Errorf("second Mark: %v, want ErrMarked", err)
	}
	fi, err := os.Lstat(ref.markPath())
	if err != nil {
		t.Fatal(err)
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o400 || fi.Size() != 0 {
		t.Errorf("mark %s: mode %v, size %d; want an empty regular file, mode 0400", ref.markPath(), fi.Mode(), fi.Size())
	}
	// Nothing the sandbox sees holds it.
	for _, d := range []string{"alloc", "sandbox"} {
		if strings.HasPrefix(ref.markPath(), filepath.Join(ref.HostAllocDir, d)+"/") {
			t.Errorf("mark %s is inside the sandbox's %s/", ref.markPath(), d)
		}
	}

	gone := Ref{AllocID: "a2", HostAllocDir: filepath.Join(root, "a2")}
	if _, err := gone.Marked(); err == nil {
		t.Error("Marked() of a missing allocation dir: no error, want one (the mark's absence is not proven)")
	}
	if err := gone.Mark(); err == nil || errors.Is(err, ErrMarked) {
		t.Errorf("Mark() of a missing allocation dir: %v, want an error other than ErrMarked", err)
	}
	// A symlink in the allocation dir's place is not followed.
	if err := os.Symlink(ref.HostAllocDir, gone.HostAllocDir); err != nil {
		t.Fatal(err)
	}
	if _, err := gone.Marked(); err == nil {
		t.Error("Marked() through a symlinked allocation dir: no error")
	}
}
