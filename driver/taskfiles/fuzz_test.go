package taskfiles

import (
	"bytes"
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// FuzzWriteBack has a command leave a random tree in local/ and alloc/data
// (dirs, files, setuid and setgid files, setgid and sticky dirs, symlinks
// to a host file and dir, hard links to a host file, FIFOs, sockets,
// character and block devices, deep nesting, long names) and writes it
// back under small bounds. Whatever the tree: the host outside the task's
// dirs is unchanged and none of its content is copied; everything the
// write-back made is a directory, regular file or symlink, without setuid,
// setgid or sticky bits, owned by the command's user; over a bound, nothing
// was made at all.
func FuzzWriteBack(f *testing.F) {
	f.Add([]byte("\x00a\n\x01a/f\n\x02a/suid\n\x03sg\n\x04to-file\n\x05to-dir\n\x06hl\n\x07fifo\n\x08chr\n\x09blk\n\x0asock\n\x0broot"))
	f.Add([]byte("\x10x\n\x11x/y\n\x12x/z\n\x13x/s\n\x14x/l\n\x16x/h\n\x18x/c"))
	f.Add(bytes.Repeat([]byte("\x00d/"), 40))
	f.Add(append([]byte("\x01"), bytes.Repeat([]byte("n"), 300)...))
	f.Fuzz(func(t *testing.T, prog []byte) {
		if os.Geteuid() != 0 {
			t.Skip("the write-back sets owners: run as root")
		}
		fx := newFixture(t)
		fx.sync.UID, fx.sync.GID = 1000, 1000
		fx.sync.Limits = Limits{Bytes: 1 << 20, Entries: 200, NameBytes: 64 << 10}
		if _, err := fx.sync.In(); err != nil {
			t.Fatal(err)
		}
		before := fx.hostState(t)
		for _, ins := range bytes.Split(prog, []byte{'\n'}) {
			if len(ins) < 2 {
				continue
			}
			rel := sanitizeRel(string(ins[1:]))
			if rel == "" {
				continue
			}
			root := filepath.Join(fx.sandbox, "sandbox/local")
			if ins[0]&0x10 != 0 {
				root = filepath.Join(fx.sandbox, "alloc/data")
			}
			if !plantable(root, rel) {
				continue
			}
			p := filepath.Join(root, rel)
			_ = os.MkdirAll(filepath.Dir(p), 0o755)
			switch ins[0] % 16 % 12 {
			case 0:
				_ = os.MkdirAll(p, 0o755)
			case 1:
				_ = os.WriteFile(p, []byte("sandbox"), 0o644)
			case 2:
				if os.WriteFile(p, []byte("#!/bin/sh\n"), 0o755) == nil {
					_ = unix.Chmod(p, 0o6755)
				}
			case 3:
				if os.Mkdir(p, 0o755) == nil {
					_ = unix.Chmod(p, 0o3777)
				}
			case 4:
				_ = os.Symlink(fx.secret, p)
			case 5:
				_ = os.Symlink(fx.host, p)
			case 6:
				_ = os.Link(fx.secret, p)
			case 7:
				_ = unix.Mkfifo(p, 0o666)
			case 8:
				_ = unix.Mknod(p, unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3)))
			case 9:
				_ = unix.Mknod(p, unix.S_IFBLK|0o666, int(unix.Mkdev(7, 0)))
			case 10:
				if l, err := net.ListenUnix("unix", &net.UnixAddr{Name: p, Net: "unix"}); err == nil {
					l.SetUnlinkOnClose(false)
					l.Close()
				}
			case 11:
				// Root's, setuid: as a sandbox running as root leaves it.
				if os.WriteFile(p, []byte("#!/bin/sh\n"), 0o755) == nil {
					_ = unix.Lchown(p, 0, 0)
					_ = unix.Chmod(p, 0o4755)
				}
			}
		}
		_, err := fx.sync.Out()
		made := 0
		for _, tree := range []string{"agent/local", "alloc/data"} {
			dir := filepath.Join(fx.task, tree)
			_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, werr error) error {
				if werr != nil || p == dir {
					return werr
				}
				made++
				var st unix.Stat_t
				if err := unix.Lstat(p, &st); err != nil {
					t.Fatal(err)
				}
				switch typ := st.Mode & unix.S_IFMT; {
				case typ != unix.S_IFDIR && typ != unix.S_IFREG && typ != unix.S_IFLNK:
					t.Fatalf("%s: made with type %o", p, typ)
				case st.Mode&0o7000 != 0:
					t.Fatalf("%s: made with mode %o", p, st.Mode)
				case st.Uid != 1000 || st.Gid != 1000:
					t.Fatalf("%s: made owned by %d:%d, want the command's user", p, st.Uid, st.Gid)
				}
				if typ := st.Mode & unix.S_IFMT; typ == unix.S_IFREG {
					if b, _ := os.ReadFile(p); strings.Contains(string(b), hostSecret) {
						t.Fatalf("%s: host content copied", p)
					}
				}
				return nil
			})
		}
		if errors.Is(err, ErrLimit) && !errors.Is(err, ErrPartial) && made != 0 {
			t.Fatalf("over a bound (%v), the write-back made %d entries", err, made)
		}
		if after := fx.hostState(t); after != before {
			t.Fatalf("host changed:\n%s\nwas\n%s", after, before)
		}
	})
}

// plantable reports whether rel does not exist beneath root and each of its
// parents is a directory or missing: planting must not itself follow what
// was planted before.
func plantable(root, rel string) bool {
	p := root
	parts := strings.Split(rel, "/")
	for i, part := range parts {
		p = filepath.Join(p, part)
		fi, err := os.Lstat(p)
		if err != nil {
			return errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENAMETOOLONG)
		}
		if i == len(parts)-1 || !fi.IsDir() {
			return false
		}
	}
	return false
}

// sanitizeRel makes a fuzzed name a clean relative path.
func sanitizeRel(s string) string {
	var parts []string
	for _, p := range strings.Split(strings.NewReplacer("\x00", "", "\n", "").Replace(s), "/") {
		if p != "" && p != "." && p != ".." {
			parts = append(parts, p)
		}
	}
	return strings.Join(parts, "/")
}
