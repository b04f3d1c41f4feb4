//go:build linux

package allocfs

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// handleAt opens a handle on rel in a fresh fake allocation dir.
func handleAt(t *testing.T, rel string) (*Handle, Dir, string) {
	t.Helper()
	d, root := sandbox(t)
	h, err := d.OpenHandle(rel)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h, d, root
}

// Every Handle operation on a name the sandbox replaced by something hostile
// (a symlink to a host file or dir, a FIFO, a hard link to a host file)
// refuses it or works on the name itself: the host is unchanged, no host
// content is read, nothing hangs.
func TestHandleNeverFollowsWhatTheSandboxPlanted(t *testing.T) {
	for _, pl := range plants {
		t.Run(pl.name, func(t *testing.T) {
			h, _, root := handleAt(t, "alloc/.agentkernel")
			host := newHost(t)
			p := filepath.Join(root, "alloc/.agentkernel/run1")
			if err := os.RemoveAll(p); err != nil {
				t.Fatal(err)
			}
			pl.make(t, host, p)
			before := host.snapshot(t)

			if sub, err := within(t, func() (*Handle, error) { return h.Sub("run1") }); err == nil {
				sub.Close()
				t.Errorf("Sub opened a planted %s as a directory", pl.name)
			} else if !errors.Is(err, ErrTampered) {
				t.Errorf("Sub of a planted %s: %v, want tampered", pl.name, err)
			}
			if f, err := within(t, func() (*os.File, error) { return h.Open("run1") }); err == nil {
				b, _ := io.ReadAll(io.LimitReader(f, 64))
				f.Close()
				t.Errorf("Open read a planted %s: %q", pl.name, b)
			}
			if _, err := within(t, func() (*os.File, error) { return h.Create("run1", 0o644, -1, -1) }); !errors.Is(err, fs.ErrExist) {
				t.Errorf("Create over a planted %s: %v, want exists", pl.name, err)
			}
			if err := h.Mkdir("run1", 0o755, -1, -1); !errors.Is(err, fs.ErrExist) {
				t.Errorf("Mkdir over a planted %s: %v, want exists", pl.name, err)
			}
			if err := h.Symlink("x", "run1", -1, -1); !errors.Is(err, fs.ErrExist) {
				t.Errorf("Symlink over a planted %s: %v, want exists", pl.name, err)
			}
			if e, err := h.Lstat("run1"); err != nil || e.IsDir() || e.IsRegular() && !strings.Contains(pl.name, "hard link") {
				t.Errorf("Lstat of a planted %s: %+v %v, want it described, not followed", pl.name, e, err)
			}
			if _, err := within(t, noValue(func() error {
				_, err := CopyFile(h, "run1", h, "copy", 1<<20, Attrs{Perm: 0o644, UID: -1, GID: -1})
				return err
			})); err == nil {
				t.Errorf("CopyFile copied a planted %s", pl.name)
			}
			if _, err := os.Lstat(filepath.Join(root, "alloc/.agentkernel/copy")); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("a refused copy left its file: %v", err)
			}
			if err := h.Remove("run1"); err != nil {
				t.Errorf("Remove of the name itself: %v", err)
			}
			if after := host.snapshot(t); after != before {
				t.Fatalf("host changed:\n%s\nwas\n%s", after, before)
			}
		})
	}
}

// A symlink in place of a directory above the handle's: the handle cannot be
// opened through it.
func TestOpenHandleRefusesASymlinkedComponent(t *testing.T) {
	d, root := sandbox(t)
	host := newHost(t)
	if err := os.RemoveAll(filepath.Join(root, "alloc/.agentkernel")); err != nil {
		t.Fatal(err)
	}
	// The host dir holds a run1 dir, so only following the symlink finds it.
	if err := os.Mkdir(filepath.Join(host.dir, "run1"), 0o755); err != nil {
		t.Fatal(err)
	}
	symlink(t, host.dir, filepath.Join(root, "alloc/.agentkernel"))
	if h, err := d.OpenHandle("alloc/.agentkernel/run1"); !errors.Is(err, ErrTampered) {
		h.Close()
		t.Fatalf("OpenHandle through a symlinked component: %v, want tampered", err)
	}
	a, err := d.OpenHandle("alloc")
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if h, err := a.Sub(".agentkernel"); !errors.Is(err, ErrTampered) {
		h.Close()
		t.Fatalf("Sub of a symlinked dir: %v, want tampered", err)
	}
}

// Only single names are taken.
func TestHandleTakesSingleNames(t *testing.T) {
	h, _, _ := handleAt(t, "alloc")
	for _, name := range []string{"", ".", "..", ".agentkernel/run1", "../alloc", "/etc", "a\x00b"} {
		if _, err := h.Lstat(name); err == nil {
			t.Errorf("Lstat(%q) accepted", name)
		}
		if _, err := h.Sub(name); err == nil {
			t.Errorf("Sub(%q) accepted", name)
		}
		if _, err := h.Create(name, 0o644, -1, -1); err == nil {
			t.Errorf("Create(%q) accepted", name)
		}
	}
}

// Create and Mkdir set mode and owner through the descriptor (the umask does
// not narrow them); an existing directory is kept by Mkdir; Create refuses
// an existing name without touching it.
func TestHandleCreateAndMkdir(t *testing.T) {
	h, _, root := handleAt(t, "alloc/.agentkernel/run1")
	old := syscall.Umask(0o077)
	defer syscall.Umask(old)
	f, err := h.Create("argv", 0o640, os.Getuid(), os.Getgid())
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if fi, err := os.Lstat(filepath.Join(root, "alloc/.agentkernel/run1/argv")); err != nil || fi.Mode().Perm() != 0o640 {
		t.Fatalf("created file mode %v %v", fi.Mode(), err)
	}
	if _, err := h.Create("stdout", 0o644, -1, -1); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("Create of an existing file: %v", err)
	}
	if got, _ := os.ReadFile(filepath.Join(root, "alloc/.agentkernel/run1/stdout")); string(got) != "out\n" {
		t.Fatalf("existing file changed: %q", got)
	}
	if err := h.Mkdir("sub", 0o1777, -1, -1); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(root, "alloc/.agentkernel/run1/sub")); err != nil || fi.Mode()&(os.ModeSticky|os.ModePerm) != os.ModeSticky|0o777 {
		t.Fatalf("dir mode %v %v", fi.Mode(), err)
	}
	if err := h.Mkdir("sub", 0o700, -1, -1); err != nil {
		t.Fatalf("existing dir: %v", err)
	}
	if err := h.Mkdir("pid", 0o700, -1, -1); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("Mkdir over a file: %v", err)
	}
	sub, err := h.Sub("sub")
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	if sub.Rel() != "alloc/.agentkernel/run1/sub" {
		t.Fatalf("Rel %q", sub.Rel())
	}
	if err := sub.Symlink("../pid", "link", -1, -1); err != nil {
		t.Fatal(err)
	}
	if l, err := sub.Readlink("link"); err != nil || l != "../pid" {
		t.Fatalf("readlink %q %v", l, err)
	}
	if err := sub.Rename("link", "moved"); err != nil {
		t.Fatal(err)
	}
	entries, err := sub.readDir()
	if err != nil || len(entries) != 1 || entries[0].Name != "moved" || !entries[0].IsSymlink() {
		t.Fatalf("ReadDir %+v %v", entries, err)
	}
}

// CopyFile copies content (at most the limit), mode, owner and mtime; small
// files and large ones (copy_file_range) alike; it refuses an existing
// destination and a hard-linked source unless hard links are accepted.
func TestCopyFile(t *testing.T) {
	h, d, root := handleAt(t, "alloc/.agentkernel/run1")
	mtime := time.Date(2024, 5, 6, 7, 8, 9, 123456789, time.UTC).UnixNano()
	big := bytes.Repeat([]byte("0123456789abcdef"), 100_000) // 1.6 MB
	if err := os.WriteFile(filepath.Join(root, "alloc/.agentkernel/run1/big"), big, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		src   string
		limit int64
		want  []byte
	}{
		{"stdout", 4, []byte("out\n")},
		{"stdout", 2, []byte("ou")},
		{"stdout", 100, []byte("out\n")},
		{"big", int64(len(big)), big},
		{"big", smallFile + 10, big[:smallFile+10]},
	} {
		dst := "copy-" + c.src
		n, err := CopyFile(h, c.src, h, dst, c.limit, Attrs{Perm: 0o750, UID: os.Getuid(), GID: os.Getgid(), MTime: mtime})
		if err != nil || n != int64(len(c.want)) {
			t.Fatalf("copy %s limit %d: %d %v", c.src, c.limit, n, err)
		}
		p := filepath.Join(root, "alloc/.agentkernel/run1", dst)
		got, _ := os.ReadFile(p)
		fi, _ := os.Lstat(p)
		if !bytes.Equal(got, c.want) || fi.Mode().Perm() != 0o750 || fi.ModTime().UnixNano() != mtime {
			t.Fatalf("copy %s limit %d: %d bytes, mode %v, mtime %v", c.src, c.limit, len(got), fi.Mode(), fi.ModTime())
		}
		if _, err := CopyFile(h, c.src, h, dst, c.limit, Attrs{Perm: 0o644, UID: -1, GID: -1}); !errors.Is(err, fs.ErrExist) {
			t.Fatalf("copy over an existing file: %v", err)
		}
		if err := h.Remove(dst); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Link(filepath.Join(root, "alloc/.agentkernel/run1/pid"), filepath.Join(root, "alloc/pid-link")); err != nil {
		t.Fatal(err)
	}
	if _, err := CopyFile(h, "pid", h, "copy", 100, Attrs{Perm: 0o644, UID: -1, GID: -1}); !errors.Is(err, ErrTampered) {
		t.Fatalf("hard-linked source: %v, want tampered", err)
	}
	h2, err := d.WithHardLinks().OpenHandle("alloc/.agentkernel/run1")
	if err != nil {
		t.Fatal(err)
	}
	defer h2.Close()
	if _, err := CopyFile(h2, "pid", h2, "copy", 100, Attrs{Perm: 0o644, UID: -1, GID: -1}); err != nil {
		t.Fatalf("hard-linked source where accepted: %v", err)
	}
}
