package taskfiles

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/agentkernel/agentkernel-pool/driver/allocfs"
)

// The copy in creates the task's files under their final names; where the
// sandbox already has something under one of them (its template's file, a
// symlink to a host file or dir, a directory where a file goes, a file where
// a directory goes, a FIFO), the task's file replaces it without following
// it, and nothing outside the sandbox changes. No temporary name is left.
func TestInReplacesWhatTheSandboxHasUnderTheSameNames(t *testing.T) {
	f := newFixture(t)
	write(t, filepath.Join(f.task, "agent/local/config.env"), "V=task", 0o644)
	write(t, filepath.Join(f.task, "agent/local/to-file"), "task file", 0o640)
	write(t, filepath.Join(f.task, "agent/local/to-dir/inside"), "inside", 0o644)
	write(t, filepath.Join(f.task, "agent/local/was-dir"), "now a file", 0o644)
	write(t, filepath.Join(f.task, "agent/local/was-file/inside"), "in a dir", 0o644)
	write(t, filepath.Join(f.task, "agent/local/fifo"), "not a fifo", 0o644)
	write(t, filepath.Join(f.task, "agent/secrets/token"), "s3cret", 0o600)
	sl := filepath.Join(f.sandbox, "sandbox/local")
	write(t, filepath.Join(sl, "config.env"), "V=template", 0o644)
	if err := os.Symlink(f.secret, filepath.Join(sl, "to-file")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(f.host, filepath.Join(sl, "to-dir")); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(sl, "was-dir/deep/x"), "x", 0o644)
	write(t, filepath.Join(sl, "was-file"), "file", 0o644)
	if err := syscall.Mkfifo(filepath.Join(sl, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(f.secret, filepath.Join(f.sandbox, "sandbox/secrets/token")); err != nil {
		t.Fatal(err)
	}
	before := f.hostState(t)
	if _, err := f.sync.In(); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]string{
		"sandbox/local/config.env": "V=task", "sandbox/local/to-file": "task file", "sandbox/local/to-dir/inside": "inside",
		"sandbox/local/was-dir": "now a file", "sandbox/local/was-file/inside": "in a dir", "sandbox/local/fifo": "not a fifo",
		"sandbox/secrets/token": "s3cret",
	} {
		fi, err := os.Lstat(filepath.Join(f.sandbox, p))
		if err != nil || !fi.Mode().IsRegular() {
			t.Errorf("%s: %v %v, want a regular file", p, fi, err)
			continue
		}
		if got := read(t, filepath.Join(f.sandbox, p)); got != want {
			t.Errorf("%s = %q, want %q", p, got, want)
		}
	}
	if fi, _ := os.Lstat(filepath.Join(sl, "to-file")); fi.Mode().Perm() != 0o640 {
		t.Errorf("replaced file mode %v, want 0640", fi.Mode())
	}
	noTemps(t, f.sandbox)
	noSecretIn(t, f.sandbox)
	if after := f.hostState(t); after != before {
		t.Fatalf("host changed:\n%s\nwas\n%s", after, before)
	}
}

// A directory swapped for a symlink to a host dir after the listing, on the
// side read (the sandbox's, for a write-back) or the side written: the copy
// fails naming it, reads nothing of the host and writes nothing there.
func TestCopySwappedDirAfterListing(t *testing.T) {
	for _, side := range []string{"read", "written"} {
		t.Run(side, func(t *testing.T) {
			f := newFixture(t)
			write(t, filepath.Join(f.host, "dir/file"), "host", 0o644)
			write(t, filepath.Join(f.sandbox, "sandbox/local/dir/file"), "sandbox", 0o644)
			write(t, filepath.Join(f.task, "agent/local/dir/file"), "task", 0o644)
			swap := filepath.Join(f.sandbox, "sandbox/local/dir")
			if side == "written" {
				swap = filepath.Join(f.task, "agent/local/dir")
			}
			// The swap comes when the copy has met dir (fstatat: a
			// directory), before it enters it on either side.
			c := &copier{w: newWalker(DefaultLimits), own: hostOwner(-1, -1),
				want: func(_ *copier, _ *dest, e allocfs.Entry) (bool, error) {
					if e.Name == "dir" {
						if err := os.RemoveAll(swap); err != nil {
							return false, err
						}
						if err := os.Symlink(filepath.Join(f.host, "dir"), swap); err != nil {
							return false, err
						}
					}
					return true, nil
				}}
			before := f.hostState(t)
			err := c.copyTree(f.sync.Sandbox, "sandbox/local", f.sync.Task, "agent/local", "local")
			if side == "read" && (err == nil || !strings.Contains(err.Error(), "sandbox/local/dir")) {
				t.Fatalf("copy from a swapped dir: %v, want an error naming it", err)
			}
			if side == "written" {
				// The symlink is replaced by a directory of the plugin's
				// making, or the copy fails: either way the host is unchanged.
				if err == nil {
					if fi, lerr := os.Lstat(swap); lerr != nil || !fi.IsDir() {
						t.Fatalf("after the copy %s is %v %v", swap, fi, lerr)
					}
				}
			}
			noSecretIn(t, f.task)
			if got := read(t, filepath.Join(f.host, "dir/file")); got != "host" {
				t.Fatalf("host file now %q", got)
			}
			if after := f.hostState(t); after != before {
				t.Fatalf("host changed:\n%s\nwas\n%s", after, before)
			}
		})
	}
}

// A refresh and a write-back replace files through temporary names renamed
// into place, and leave none behind.
func TestRefreshAndOutLeaveNoTemporaryNames(t *testing.T) {
	f := newFixture(t)
	write(t, filepath.Join(f.task, "agent/local/a/b/config"), "1", 0o644)
	if _, err := f.sync.In(); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(f.task, "agent/local/a/b/config"), "22", 0o644)
	if _, err := f.sync.Refresh(); err != nil {
		t.Fatal(err)
	}
	if got := read(t, filepath.Join(f.sandbox, "sandbox/local/a/b/config")); got != "22" {
		t.Fatalf("refreshed %q", got)
	}
	write(t, filepath.Join(f.sandbox, "sandbox/local/a/b/config"), "333", 0o644)
	write(t, filepath.Join(f.sandbox, "sandbox/local/a/new"), "new", 0o644)
	if _, err := f.sync.Out(); err != nil {
		t.Fatal(err)
	}
	if got := read(t, filepath.Join(f.task, "agent/local/a/b/config")); got != "333" {
		t.Fatalf("written back %q", got)
	}
	noTemps(t, f.sandbox)
	noTemps(t, f.task)
}

func noTemps(t *testing.T, dir string) {
	t.Helper()
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && strings.HasPrefix(d.Name(), ".agentkernel-tmp-") {
			t.Errorf("temporary name left: %s", p)
		}
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return err
	})
}
