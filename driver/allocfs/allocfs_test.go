//go:build linux

package allocfs

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

const secret = "HOST-SECRET-7c1e"

// hostFiles are files and a dir outside the sandbox, standing in for the host's
// token file and /etc; the tests check them before and after.
type hostFiles struct {
	dir, file string
}

func newHost(t testing.TB) hostFiles {
	t.Helper()
	dir := t.TempDir()
	file := filepath.Join(dir, "token")
	if err := os.WriteFile(file, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return hostFiles{dir: dir, file: file}
}

// snapshot is everything a test checks of the host side: each entry's name,
// mode, owner, size, mtime and content.
func (h hostFiles) snapshot(t testing.TB) string {
	t.Helper()
	var b strings.Builder
	err := filepath.WalkDir(h.dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		b.WriteString(p + " " + strings.Join([]string{
			fileType(st.Mode), itoa(int64(st.Mode)), itoa(int64(st.Uid)), itoa(int64(st.Gid)),
			itoa(st.Size), itoa(st.Mtim.Nano()),
		}, " "))
		if e.Type().IsRegular() {
			c, _ := os.ReadFile(p)
			b.Write(c)
		}
		b.WriteByte('\n')
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// plant replaces path by one hostile thing.
type plant struct {
	name string
	make func(t testing.TB, h hostFiles, path string)
}

var plants = []plant{
	{"symlink to host file", func(t testing.TB, h hostFiles, p string) { symlink(t, h.file, p) }},
	{"symlink to host dir", func(t testing.TB, h hostFiles, p string) { symlink(t, h.dir, p) }},
	{"dangling symlink", func(t testing.TB, h hostFiles, p string) { symlink(t, filepath.Join(h.dir, "nothing"), p) }},
	{"relative symlink out", func(t testing.TB, h hostFiles, p string) {
		rel, err := filepath.Rel(filepath.Dir(p), h.file)
		if err != nil {
			t.Fatal(err)
		}
		symlink(t, rel, p)
	}},
	{"symlink to /dev/zero", func(t testing.TB, h hostFiles, p string) { symlink(t, "/dev/zero", p) }},
	{"fifo", func(t testing.TB, h hostFiles, p string) {
		if err := syscall.Mkfifo(p, 0o666); err != nil {
			t.Fatal(err)
		}
	}},
	{"hard link to host file", func(t testing.TB, h hostFiles, p string) {
		if err := os.Link(h.file, p); err != nil {
			t.Skip("host file on another filesystem:", err)
		}
	}},
}

func symlink(t testing.TB, target, p string) {
	t.Helper()
	if err := os.Symlink(target, p); err != nil {
		t.Fatal(err)
	}
}

// sandbox is a fake allocation dir with a run dir holding the plugin's files.
func sandbox(t testing.TB) (Dir, string) {
	t.Helper()
	root := t.TempDir()
	run := filepath.Join(root, "alloc", ".agentkernel", "run1")
	if err := os.MkdirAll(run, 0o777); err != nil {
		t.Fatal(err)
	}
	for name, content := range map[string]string{"pid": "12 13\n", "exit": "0\n", "stdout": "out\n"} {
		if err := os.WriteFile(filepath.Join(run, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return New(root, "0123456789abcdef"), root
}

// within fails the test when op does not return within a second: nothing a
// sandbox plants may hang the plugin.
func within[T any](t *testing.T, op func() (T, error)) (T, error) {
	t.Helper()
	type result struct {
		v   T
		err error
	}
	done := make(chan result, 1)
	go func() { v, err := op(); done <- result{v, err} }()
	select {
	case r := <-done:
		return r.v, r.err
	case <-time.After(time.Second):
		t.Fatal("hung")
	}
	var zero T
	return zero, nil
}

// noValue adapts an operation without a result to within.
func noValue(op func() error) func() (struct{}, error) {
	return func() (struct{}, error) { return struct{}{}, op() }
}

func TestReadsRefuseWhatTheSandboxPlanted(t *testing.T) {
	for _, target := range []string{
		"alloc/.agentkernel/run1/stdout", "alloc/.agentkernel/run1/exit",
		"alloc/.agentkernel/run1", "alloc/.agentkernel",
	} {
		for _, pl := range plants {
			t.Run(filepath.Base(target)+"/"+pl.name, func(t *testing.T) {
				d, root := sandbox(t)
				h := newHost(t)
				before := h.snapshot(t)
				p := filepath.Join(root, target)
				if err := os.RemoveAll(p); err != nil {
					t.Fatal(err)
				}
				pl.make(t, h, p)
				file := target
				if !strings.HasSuffix(target, "stdout") && !strings.HasSuffix(target, "exit") {
					file = "alloc/.agentkernel/run1/exit"
				}
				got, err := within(t, func() ([]byte, error) { return d.ReadRecord(file, 64) })
				if err == nil {
					t.Fatalf("read %s through a %s: no error, got %q", file, pl.name, got)
				}
				if bytes.Contains(got, []byte(secret)) || strings.Contains(err.Error(), secret) {
					t.Fatalf("host content leaked: %q %v", got, err)
				}
				if !errors.Is(err, ErrTampered) && !errors.Is(err, fs.ErrNotExist) {
					t.Fatalf("error %v: want tampered or not-exist", err)
				}
				if pl.name != "dangling symlink" && !errors.Is(err, ErrTampered) {
					t.Fatalf("error %v: want tampered", err)
				}
				if _, err := within(t, func() (*os.File, error) { return d.OpenFile(file) }); err == nil {
					t.Fatal("OpenFile accepted it")
				}
				if after := h.snapshot(t); after != before {
					t.Fatalf("host changed:\n%s\nwas\n%s", after, before)
				}
			})
		}
	}
}

func TestTamperedErrorNamesSandboxAndFile(t *testing.T) {
	d, root := sandbox(t)
	h := newHost(t)
	p := filepath.Join(root, "alloc/.agentkernel/run1/exit")
	os.Remove(p)
	symlink(t, h.file, p)
	_, err := d.ReadRecord("alloc/.agentkernel/run1/exit", 64)
	want := `sandbox 01234567 tampered with "alloc/.agentkernel/run1/exit": a symlink is in its path`
	if err == nil || err.Error() != want {
		t.Fatalf("error %v, want %q", err, want)
	}
}

func TestReadRecordBounds(t *testing.T) {
	d, root := sandbox(t)
	if err := os.WriteFile(filepath.Join(root, "alloc/.agentkernel/run1/exit"), bytes.Repeat([]byte("9"), 1000), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := d.ReadRecord("alloc/.agentkernel/run1/exit", 64); !errors.Is(err, ErrTampered) {
		t.Fatalf("oversized record: %v", err)
	}
	b, err := d.ReadRecord("alloc/.agentkernel/run1/pid", 64)
	if err != nil || string(b) != "12 13\n" {
		t.Fatalf("pid record: %q %v", b, err)
	}
}

func TestWritesNeverReachTheHost(t *testing.T) {
	for _, target := range []string{
		"alloc/.agentkernel/run1/argv", "alloc/.agentkernel/run1", "alloc/.agentkernel",
	} {
		for _, pl := range plants {
			t.Run(filepath.Base(target)+"/"+pl.name, func(t *testing.T) {
				d, root := sandbox(t)
				h := newHost(t)
				p := filepath.Join(root, target)
				if err := os.RemoveAll(p); err != nil {
					t.Fatal(err)
				}
				pl.make(t, h, p)
				before := h.snapshot(t)
				_, errCreate := within(t, noValue(func() error {
					return d.CreateFile("alloc/.agentkernel/run1/argv", []byte("set -- x\n"), 0o644, 0, 0)
				}))
				_, errMkdir := within(t, noValue(func() error { return d.Mkdir("alloc/.agentkernel/run1", 0o1777) }))
				_, errRemove := within(t, noValue(func() error { return d.Remove("alloc/.agentkernel/run1/argv") }))
				_, errExists := d.Exists("alloc/.agentkernel/run1/launched")
				if errCreate == nil {
					t.Error("CreateFile went through a planted " + pl.name)
				}
				if target != "alloc/.agentkernel/run1/argv" && errMkdir == nil && pl.name != "dangling symlink" {
					t.Error("Mkdir accepted a planted " + pl.name)
				}
				for _, err := range []error{errCreate, errMkdir, errRemove, errExists} {
					if err != nil && strings.Contains(err.Error(), secret) {
						t.Fatalf("error quotes host content: %v", err)
					}
				}
				if after := h.snapshot(t); after != before {
					t.Fatalf("host changed:\n%s\nwas\n%s", after, before)
				}
			})
		}
	}
}

func TestCreateFileSetsModeAndOwnerOnTheFile(t *testing.T) {
	d, root := sandbox(t)
	rel := "alloc/.agentkernel/run1/argv"
	if err := d.CreateFile(rel, []byte("set -- a\n"), 0o640, os.Getuid(), os.Getgid()); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Lstat(filepath.Join(root, rel))
	if err != nil || fi.Mode().Perm() != 0o640 {
		t.Fatalf("mode %v %v", fi.Mode(), err)
	}
	if err := d.CreateFile(rel, []byte("again"), 0o640, -1, -1); !errors.Is(err, ErrTampered) {
		t.Fatalf("second create: %v, want tampered (exists)", err)
	}
}

func TestMkdirSetsModeThroughDescriptor(t *testing.T) {
	d, root := sandbox(t)
	old := syscall.Umask(0o077)
	defer syscall.Umask(old)
	if err := d.Mkdir("alloc/.agentkernel/run2", 0o1777); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(root, "alloc/.agentkernel/run2"))
	if err != nil || fi.Mode()&(os.ModeSticky|os.ModePerm) != os.ModeSticky|0o777 {
		t.Fatalf("mode %v %v", fi.Mode(), err)
	}
	if err := d.Mkdir("alloc/.agentkernel/run2", 0o1777); err != nil {
		t.Fatalf("existing dir: %v", err)
	}
}

func TestWalkMatchesOpenat2(t *testing.T) {
	_, root := sandbox(t)
	h := newHost(t)
	symlink(t, h.dir, filepath.Join(root, "alloc", "link"))
	rootfd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(rootfd)
	for _, rel := range []string{"alloc/.agentkernel/run1/pid", "alloc/link/token", "alloc/link/none", "alloc/none", "alloc/none/x", "alloc/.agentkernel/run1/pid/x"} {
		fd1, err1 := openBeneath(rootfd, rel, pathFlags)
		fd2, err2 := walkBeneath(rootfd, rel, pathFlags)
		if (err1 == nil) != (err2 == nil) || !errors.Is(err2, err1) {
			t.Errorf("%s: openat2 %v, walk %v", rel, err1, err2)
		}
		if err1 == nil {
			unix.Close(fd1)
		}
		if err2 == nil {
			unix.Close(fd2)
		}
	}
}
