//go:build linux

package allocfs

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// mkTree makes n files, a FIFO and a symlink to the host dir in dir, and a
// sub dir holding the same once more.
func mkTree(t *testing.T, dir, hostDir string, n int) {
	t.Helper()
	for _, d := range []string{dir, filepath.Join(dir, "sub")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		for i := range n {
			if err := os.WriteFile(filepath.Join(d, "f"+strconv.Itoa(i)), nil, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if err := unix.Mkfifo(filepath.Join(d, "fifo"), 0o644); err != nil {
			t.Fatal(err)
		}
		symlink(t, hostDir, filepath.Join(d, "to-host"))
	}
}

// Each meets every name of a directory larger than a batch once, described
// without following a symlink.
func TestEachMeetsEveryNameOnce(t *testing.T) {
	d, root := sandbox(t)
	host := newHost(t)
	mkTree(t, filepath.Join(root, "alloc/data"), host.dir, 3*dirBatch+1)
	h, err := d.OpenHandle("alloc/data")
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	seen := map[string]int{}
	if err := h.Each(func(e Entry) error {
		seen[e.Name]++
		if e.Name == "to-host" && !e.IsSymlink() || e.Name == "sub" && !e.IsDir() {
			t.Errorf("%s described as %o", e.Name, e.Mode)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(seen) != 3*dirBatch+1+3 {
		t.Fatalf("met %d names, want %d", len(seen), 3*dirBatch+1+3)
	}
	for n, c := range seen {
		if c != 1 {
			t.Fatalf("%s met %d times", n, c)
		}
	}
	stop := errors.New("stop")
	calls := 0
	if err := h.Each(func(Entry) error { calls++; return stop }); err != stop || calls != 1 {
		t.Fatalf("Each after fn's error: %v, %d calls", err, calls)
	}
}

// RemoveAll removes a tree wider than a batch, with special files and
// symlinks in it, never what a symlink points to; a tree nested deeper than
// it goes is refused, and what it removed is all it touched.
func TestRemoveAll(t *testing.T) {
	d, root := sandbox(t)
	host := newHost(t)
	before := host.snapshot(t)
	mkTree(t, filepath.Join(root, "alloc/data/tree"), host.dir, 2*dirBatch+5)
	if err := d.RemoveAll("alloc/data/tree"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(root, "alloc/data/tree")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("tree still there: %v", err)
	}
	if err := d.RemoveAll("alloc/data/missing"); err != nil {
		t.Fatalf("a missing name: %v", err)
	}
	// A symlink where the tree's root was: the link goes, its target stays.
	symlink(t, host.dir, filepath.Join(root, "alloc/data/link"))
	if err := d.RemoveAll("alloc/data/link"); err != nil {
		t.Fatal(err)
	}
	if after := host.snapshot(t); after != before {
		t.Fatalf("host changed:\n%s\nwas\n%s", after, before)
	}

	deep := filepath.Join(root, "alloc/data/deep", strings.Repeat("d/", maxRemoveDepth+1))
	if err := os.MkdirAll(deep, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := d.RemoveAll("alloc/data/deep"); !errors.Is(err, ErrTampered) || !strings.Contains(err.Error(), "directories deep") {
		t.Fatalf("RemoveAll of a tree deeper than %d: %v, want tampered", maxRemoveDepth, err)
	}
}

// ReadDir keeps a listing whole, so it refuses a directory of more than
// maxDirEntries names.
func TestReadDirBound(t *testing.T) {
	d, root := sandbox(t)
	dir := filepath.Join(root, "alloc/.agentkernel")
	for i := range maxDirEntries {
		if err := os.WriteFile(filepath.Join(dir, "n"+strconv.Itoa(i)), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	entries, err := d.ReadDir("alloc/.agentkernel")
	if err == nil || !errors.Is(err, ErrTampered) {
		t.Fatalf("ReadDir of more than %d names: %d entries, %v, want tampered", maxDirEntries, len(entries), err)
	}
	if err := d.RemoveAll("alloc/.agentkernel/run1"); err != nil {
		t.Fatal(err)
	}
	if entries, err := d.ReadDir("alloc/.agentkernel"); err != nil || len(entries) != maxDirEntries {
		t.Fatalf("ReadDir of %d names: %d, %v", maxDirEntries, len(entries), err)
	}
}

// Symlink sets the owner on the symlink it made, through a descriptor: a
// hard link to a host file or symlink swapped in under the name before the
// chown is refused, and the host file's owner is not changed.
func TestSymlinkOwnerIsSetOnTheSymlinkOnly(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("chown needs root")
	}
	h, _, root := handleAt(t, "alloc/.agentkernel")
	if err := h.Symlink("target", "link", 65534, 65534); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(root, "alloc/.agentkernel/link"), &st); err != nil || st.Uid != 65534 || st.Gid != 65534 || st.Mode&unix.S_IFMT != unix.S_IFLNK {
		t.Fatalf("symlink: %+v %v, want one owned by 65534:65534", st, err)
	}
	host := newHost(t)
	hostLink := filepath.Join(host.dir, "link")
	symlink(t, "/etc/shadow", hostLink)
	before := host.snapshot(t)
	for name, target := range map[string]string{"file": host.file, "symlink": hostLink} {
		// What the sandbox swaps in between symlinkat and the chown.
		p := filepath.Join(root, "alloc/.agentkernel", name)
		if err := unix.Linkat(unix.AT_FDCWD, target, unix.AT_FDCWD, p, 0); err != nil {
			t.Fatal(err)
		}
		if err := h.chownSymlink(name, 65534, 65534); !errors.Is(err, ErrTampered) {
			t.Errorf("owner set through a hard link to a host %s: %v, want tampered", name, err)
		}
	}
	if after := host.snapshot(t); after != before {
		t.Fatalf("host changed:\n%s\nwas\n%s", after, before)
	}
}
