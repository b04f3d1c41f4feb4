package taskfiles

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// treeSnapshot is every entry beneath dirs: path, type, mode, owner, size and
// content.
func treeSnapshot(t *testing.T, dirs ...string) string {
	t.Helper()
	var b strings.Builder
	for _, dir := range dirs {
		_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			var st unix.Stat_t
			if err := unix.Lstat(p, &st); err != nil {
				return err
			}
			fmt.Fprintf(&b, "%s %o %d:%d %d", p, st.Mode, st.Uid, st.Gid, st.Size)
			if d.Type().IsRegular() {
				c, _ := os.ReadFile(p)
				b.Write(c)
			}
			b.WriteByte('\n')
			return nil
		})
	}
	return b.String()
}

// plant makes n entries in dir with make(path, i).
func plant(t *testing.T, dir string, n int, make func(p string, i int) error) {
	t.Helper()
	mkdir(t, dir)
	for i := range n {
		if err := make(filepath.Join(dir, "e"+strconv.Itoa(i)), i); err != nil {
			t.Fatal(err)
		}
	}
}

// boundCases are trees at ten times one bound each, under small Limits: a
// walk meeting one stops with ErrLimit naming the bound.
var boundCases = []struct {
	name  string
	lim   Limits
	build func(t *testing.T, dir string)
	want  string // in the error: the bound
}{
	{"wide: files", Limits{Entries: 100}, func(t *testing.T, dir string) {
		plant(t, dir, 1000, func(p string, _ int) error { return os.WriteFile(p, nil, 0o644) })
	}, "more than 100 entries"},
	{"empty directories", Limits{Entries: 100}, func(t *testing.T, dir string) {
		plant(t, dir, 1000, func(p string, _ int) error { return os.Mkdir(p, 0o755) })
	}, "more than 100 entries"},
	{"hard links", Limits{Entries: 100}, func(t *testing.T, dir string) {
		write(t, filepath.Join(dir, "target"), "x", 0o644)
		plant(t, dir, 1000, func(p string, _ int) error { return os.Link(filepath.Join(dir, "target"), p) })
	}, "more than 100 entries"},
	{"special files", Limits{Entries: 100}, func(t *testing.T, dir string) {
		plant(t, dir, 1000, func(p string, _ int) error { return syscall.Mkfifo(p, 0o644) })
	}, "more than 100 entries"},
	{"the plugin's temporary names", Limits{Entries: 100}, func(t *testing.T, dir string) {
		plant(t, dir, 1000, func(p string, i int) error {
			return os.WriteFile(filepath.Join(filepath.Dir(p), ".agentkernel-tmp-"+strconv.Itoa(i)), nil, 0o644)
		})
	}, "more than 100 entries"},
	{"deep", Limits{}, func(t *testing.T, dir string) {
		write(t, filepath.Join(dir, strings.Repeat("d/", 10*MaxDepth), "f"), "x", 0o644)
	}, fmt.Sprintf("more than %d deep", MaxDepth)},
	{"long names", Limits{NameBytes: 10_000}, func(t *testing.T, dir string) {
		plant(t, dir, 400, func(p string, _ int) error { return os.WriteFile(p+strings.Repeat("n", 240), nil, 0o644) })
	}, "more than 10000 bytes together"},
	{"bytes", Limits{Bytes: 10_000}, func(t *testing.T, dir string) {
		plant(t, dir, 10, func(p string, _ int) error { return os.WriteFile(p, make([]byte, 10_000), 0o644) })
	}, "more than 10000 bytes to copy"},
}

// A command leaving a tree at ten times any bound gets an error naming the
// bound, and the write-back writes nothing; a task whose own files are such
// a tree fails to start, and the copy in writes nothing either.
func TestEveryBoundStopsTheWalk(t *testing.T) {
	for _, c := range boundCases {
		t.Run("out/"+c.name, func(t *testing.T) {
			f := newFixture(t)
			write(t, filepath.Join(f.task, "agent/local/keep"), "keep", 0o644)
			if _, err := f.sync.In(); err != nil {
				t.Fatal(err)
			}
			write(t, filepath.Join(f.sandbox, "sandbox/local/result"), "result", 0o644)
			c.build(t, filepath.Join(f.sandbox, "sandbox/local/tree"))
			before := treeSnapshot(t, filepath.Join(f.task, "agent"), filepath.Join(f.task, "alloc"))
			f.sync.Limits = c.lim
			_, err := f.sync.Out()
			if !errors.Is(err, ErrLimit) || errors.Is(err, ErrPartial) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Out = %v, want ErrLimit, before any write, saying %q", err, c.want)
			}
			if after := treeSnapshot(t, filepath.Join(f.task, "agent"), filepath.Join(f.task, "alloc")); after != before {
				t.Fatalf("a write-back over a bound wrote:\n%s\nwas\n%s", after, before)
			}
		})
		t.Run("in/"+c.name, func(t *testing.T) {
			f := newFixture(t)
			c.build(t, filepath.Join(f.task, "agent/local/tree"))
			before := treeSnapshot(t, f.sandbox)
			f.sync.Limits = c.lim
			_, err := f.sync.In()
			if !errors.Is(err, ErrLimit) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("In = %v, want ErrLimit saying %q", err, c.want)
			}
			if after := treeSnapshot(t, f.sandbox); after != before {
				t.Fatalf("a copy in over a bound wrote:\n%s\nwas\n%s", after, before)
			}
		})
	}
}

// Refresh walks the task's trees only, under the same bounds, and records
// only what it copies: a command's tree, however large, neither slows it
// nor grows the state.
func TestRefreshDoesNotWalkTheCommandsTree(t *testing.T) {
	f := newFixture(t)
	write(t, filepath.Join(f.task, "agent/local/config"), "1", 0o644)
	if _, err := f.sync.In(); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(f.sync.StatePath)
	if err != nil {
		t.Fatal(err)
	}
	small := fi.Size()
	plant(t, filepath.Join(f.sandbox, "sandbox/local/tree"), 1000, func(p string, _ int) error { return os.Mkdir(p, 0o755) })
	f.sync.Limits = Limits{Entries: 100}
	write(t, filepath.Join(f.task, "agent/local/config"), "22", 0o644)
	if _, err := f.sync.Refresh(); err != nil {
		t.Fatalf("Refresh with the command's tree over the bounds: %v", err)
	}
	if got := read(t, filepath.Join(f.sandbox, "sandbox/local/config")); got != "22" {
		t.Fatalf("refreshed %q", got)
	}
	if fi, err := os.Stat(f.sync.StatePath); err != nil || fi.Size() != small {
		t.Fatalf("state file %v (%v), want %d bytes as after the copy in", fi.Size(), err, small)
	}
	// What the command wrote before the refresh is still its own: written back.
	write(t, filepath.Join(f.sandbox, "sandbox/local/out.txt"), "mine", 0o644)
	if _, err := f.sync.Refresh(); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(f.sandbox, "sandbox/local/tree")); err != nil {
		t.Fatal(err)
	}
	if _, err := f.sync.Out(); err != nil {
		t.Fatal(err)
	}
	if got := read(t, filepath.Join(f.task, "agent/local/out.txt")); got != "mine" {
		t.Fatalf("the command's file written before a refresh came back as %q", got)
	}
}
