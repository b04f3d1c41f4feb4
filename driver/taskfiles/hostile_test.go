package taskfiles

import (
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// What the write-back makes on the host, as lstat sees it.
type hostEntry struct {
	mode     uint32
	uid, gid uint32
}

func lstat(t *testing.T, p string) hostEntry {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		t.Fatalf("lstat %s: %v", p, err)
	}
	return hostEntry{st.Mode, st.Uid, st.Gid}
}

func chmod(t *testing.T, p string, mode uint32) {
	t.Helper()
	if err := unix.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the write-back sets owners: run the tests as root")
	}
}

// A command leaves setuid, setgid and sticky files and dirs in local/ and
// alloc/data, some chowned to root (as a sandbox running as root can): on the
// host, none of those bits is on what the write-back made, and nothing it
// made is owned by root: it belongs to the command's user when that is an
// unprivileged uid, else to nobody.
func TestOutNeverMakesSetuidOrRootOwnedFiles(t *testing.T) {
	requireRoot(t)
	for _, c := range []struct {
		name               string
		uid, gid           int
		wantUID, wantGID   uint32
		sandboxUID, sbGUID int // the owner the command gives its files
	}{
		{"an unprivileged user", 1000, 1001, 1000, 1001, 1000, 1001},
		{"nobody", 65534, 65534, NobodyUID, NobodyGID, 65534, 65534},
		{"root", 0, 0, NobodyUID, NobodyGID, 0, 0},
		{"an unknown user", -1, -1, NobodyUID, NobodyGID, 0, 0},
		{"a uid chown would ignore", 1<<32 - 1, 1<<32 - 1, NobodyUID, NobodyGID, 0, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture(t)
			f.sync.UID, f.sync.GID = c.uid, c.gid
			write(t, filepath.Join(f.task, "agent/local/tool"), "old", 0o755)
			if _, err := f.sync.In(); err != nil {
				t.Fatal(err)
			}
			for _, tree := range []string{"sandbox/local", "alloc/data"} {
				root := filepath.Join(f.sandbox, tree)
				for name, mode := range map[string]uint32{"suid": 0o4755, "sgid": 0o2755, "both": 0o6777, "sticky-file": 0o1755} {
					write(t, filepath.Join(root, name), "#!/bin/sh\nid\n", 0o644)
					chmod(t, filepath.Join(root, name), mode)
				}
				for name, mode := range map[string]uint32{"sgid-dir": 0o2775, "sticky-dir": 0o1777, "all-dir": 0o7777} {
					write(t, filepath.Join(root, name, "inside"), "x", 0o644)
					write(t, filepath.Join(root, name, "sub", "deeper"), "x", 0o4755)
					chmod(t, filepath.Join(root, name, "sub", "deeper"), 0o4755)
					chmod(t, filepath.Join(root, name), mode)
				}
				if err := os.Symlink("suid", filepath.Join(root, "link")); err != nil {
					t.Fatal(err)
				}
				// Chowned to the owner the command can give its files: a
				// chown after a chmod clears setuid, so the bits are set again.
				_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
					if err == nil && p != root {
						var st unix.Stat_t
						_ = unix.Lstat(p, &st)
						_ = unix.Lchown(p, c.sandboxUID, c.sbGUID)
						if d.Type()&fs.ModeSymlink == 0 {
							chmod(t, p, st.Mode&0o7777)
						}
					}
					return err
				})
			}
			// A file the task had, changed by the command into a setuid one.
			write(t, filepath.Join(f.sandbox, "sandbox/local/tool"), "new", 0o755)
			chmod(t, filepath.Join(f.sandbox, "sandbox/local/tool"), 0o4755)
			if err := unix.Lchown(filepath.Join(f.sandbox, "sandbox/local/tool"), 0, 0); err != nil {
				t.Fatal(err)
			}
			chmod(t, filepath.Join(f.sandbox, "sandbox/local/tool"), 0o4755)

			st, err := f.sync.Out()
			if err != nil {
				t.Fatal(err)
			}
			made := 0
			for _, tree := range []string{"agent/local", "alloc/data"} {
				root := filepath.Join(f.task, tree)
				_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
					if err != nil || p == root {
						return err
					}
					made++
					e := lstat(t, p)
					if e.mode&0o7000 != 0 {
						t.Errorf("%s: mode %o carries setuid, setgid or sticky", p, e.mode)
					}
					if e.uid != c.wantUID || e.gid != c.wantGID {
						t.Errorf("%s: owned by %d:%d, want %d:%d", p, e.uid, e.gid, c.wantUID, c.wantGID)
					}
					return nil
				})
			}
			if got := read(t, filepath.Join(f.task, "agent/local/tool")); got != "new" {
				t.Errorf("local/tool = %q, want the command's version", got)
			}
			if made != 2*(4+3*4+1)+1 || st.Files == 0 {
				t.Errorf("the write-back made %d entries (stats %+v), want every one the command left", made, st)
			}
		})
	}
}

// plantSpecials makes a FIFO, a socket, a character and a block device in
// dir, and returns their names.
func plantSpecials(t *testing.T, dir string) []string {
	t.Helper()
	mkdir(t, dir)
	if err := unix.Mkfifo(filepath.Join(dir, "fifo"), 0o666); err != nil {
		t.Fatal(err)
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(dir, "sock"), Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()
	// /dev/null's and /dev/loop0's numbers: what a command with CAP_MKNOD
	// makes to reach the host's devices.
	if err := unix.Mknod(filepath.Join(dir, "chr"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mknod(filepath.Join(dir, "blk"), unix.S_IFBLK|0o666, int(unix.Mkdev(7, 0))); err != nil {
		t.Fatal(err)
	}
	return []string{"fifo", "sock", "chr", "blk"}
}

// FIFOs, sockets and device nodes the command leaves in local/ and
// alloc/data are never made on the host, and the event counts them; those
// the task's side has are never made in the sandbox.
func TestSpecialFilesAreNeverCopied(t *testing.T) {
	requireRoot(t)
	f := newFixture(t)
	inTask := plantSpecials(t, filepath.Join(f.task, "agent/local/dev"))
	st, err := f.sync.In()
	if err != nil {
		t.Fatal(err)
	}
	if st.Skipped != len(inTask) {
		t.Errorf("copy in skipped %d, want %d", st.Skipped, len(inTask))
	}
	for _, n := range inTask {
		if _, err := os.Lstat(filepath.Join(f.sandbox, "sandbox/local/dev", n)); err == nil {
			t.Errorf("%s made in the sandbox", n)
		}
	}
	planted := 0
	for _, tree := range []string{"sandbox/local/planted", "alloc/data"} {
		planted += len(plantSpecials(t, filepath.Join(f.sandbox, tree)))
	}
	st, err = f.sync.Out()
	if err != nil {
		t.Fatal(err)
	}
	if st.Skipped != planted {
		t.Errorf("write-back skipped %d, want %d", st.Skipped, planted)
	}
	for _, tree := range []string{"agent/local", "alloc/data"} {
		_ = filepath.WalkDir(filepath.Join(f.task, tree), func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.Type()&(fs.ModeDevice|fs.ModeNamedPipe|fs.ModeSocket|fs.ModeCharDevice) != 0 {
				// The task's own, planted before the copy in, are exempt.
				// That cannot hide one copied back: the sandbox's local/dev
				// holds none (checked above), and what the command planted
				// would come back under local/planted and alloc/data.
				if !strings.Contains(p, "agent/local/dev/") {
					t.Errorf("%s: a %v on the host", p, d.Type())
				}
			}
			return err
		})
	}
	if _, err := os.Lstat(filepath.Join(f.task, "agent/local/planted")); err != nil {
		t.Errorf("the dir holding only special files: %v, want it made (empty)", err)
	}
}

// A hard link the command makes to a file in its tree is left out (its
// other name could be a host file's under raw_exec), counted.
func TestOutSkipsHardLinks(t *testing.T) {
	f := newFixture(t)
	if _, err := f.sync.In(); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(f.sandbox, "alloc/data/f"), "x", 0o644)
	if err := os.Link(filepath.Join(f.sandbox, "alloc/data/f"), filepath.Join(f.sandbox, "alloc/data/g")); err != nil {
		t.Fatal(err)
	}
	st, err := f.sync.Out()
	if err != nil || st.Skipped != 2 || st.Files != 0 {
		t.Fatalf("stats %+v %v, want both names skipped", st, err)
	}
	var sys syscall.Stat_t
	if err := syscall.Lstat(filepath.Join(f.task, "alloc/data/f"), &sys); err == nil {
		t.Fatal("a hard-linked file was copied back")
	}
}
