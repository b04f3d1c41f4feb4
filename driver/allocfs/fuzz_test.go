//go:build linux

package allocfs

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/agentkernel/agentkernel-pool/internal/opentest"
)

// FuzzBoundary builds a random tree in a fake allocation dir (dirs, files,
// symlinks into the host, to /dev/zero and back up the tree, FIFOs, device
// nodes, sockets, deep nesting, long names) and runs every Dir operation on
// random paths in it, resolving them with openat2 or, as a kernel before 5.6
// does, by the component walk (an instruction switches). No operation may
// read a host file, change anything outside the allocation dir, hang, or
// open a planted node.
func FuzzBoundary(f *testing.F) {
	f.Add([]byte("\x00a\x01b\x02c\x03d\x10a\x11b\x12c\x13d"))
	f.Add([]byte("\x00alloc\x00alloc/x\x02alloc/x/y\x10alloc/x/y\x14alloc/x/y/z"))
	f.Add([]byte("\x04p\x05q\x06r\x07s\x10p\x10q\x10r\x10s\x11p\x15q\x16r\x17s"))
	f.Add(bytes.Repeat([]byte("\x00d/"), 60))
	f.Add(append([]byte("\x01"), bytes.Repeat([]byte("n"), 300)...))
	f.Add([]byte("\x00r\n\x18r/c\n\x19r/b\n\x1ar/s\n\x06r/f\n\x08r/c\n\x0ar/b\n\x10r/s\n\x13r/f\n\x1br\n\x09r/c\n\x0fr/b\n\x14r\n"))
	f.Add([]byte("\x00d\n\x18d/c\n\x19d/b\n\x1ad/s\n\x06d/f\n\x1cd\n\x1ed\n\x1dd"))
	f.Fuzz(func(t *testing.T, prog []byte) {
		root := t.TempDir()
		h := newHost(t)
		before := h.snapshot(t)
		d := New(root, "fuzz")
		var watch *opentest.Watch // every planted node
		for _, ins := range bytes.Split(prog, []byte{'\n'}) {
			if len(ins) < 2 {
				continue
			}
			op, rel := ins[0]%31, sanitize(string(ins[1:]))
			if rel == "" {
				continue
			}
			p := filepath.Join(root, rel)
			if op < 8 || op >= 24 && op < 27 {
				// Plant only where nothing is yet and every dir on the way
				// is a real one: the planting itself (the test's, on the
				// host) must not follow what it planted before.
				if !plantable(root, rel) {
					continue
				}
				_ = os.MkdirAll(filepath.Dir(p), 0o755)
			}
			switch op {
			case 0:
				_ = os.MkdirAll(p, 0o755)
			case 1:
				_ = os.WriteFile(p, []byte("sandbox"), 0o644)
			case 2:
				_ = os.Symlink(h.file, p)
			case 3:
				_ = os.Symlink(h.dir, p)
			case 4:
				_ = os.Symlink("/dev/zero", p)
			case 5:
				_ = os.Symlink(strings.Repeat("../", 8), p)
			case 6:
				if syscall.Mkfifo(p, 0o666) == nil {
					watch = watchToo(t, watch, p)
				}
			case 7:
				_ = os.Link(h.file, p)
			case 24, 25, 26:
				kind := []string{opentest.CharDevice, opentest.BlockDevice, opentest.Socket}[op-24]
				if opentest.Make(kind, p) == nil {
					watch = watchToo(t, watch, p)
				}
			case 27:
				d.walk = !d.walk
			case 8, 9:
				b, err := within(t, func() ([]byte, error) { return d.ReadRecord(rel, 4096) })
				leak(t, b, err)
			case 10:
				f, err := d.OpenFile(rel)
				leakOpened(t, f, err)
			case 11:
				leak(t, nil, d.CreateFile(rel, []byte("plugin"), 0o644, -1, -1))
			case 12:
				leak(t, nil, d.Mkdir(rel, 0o1777))
			case 13:
				leak(t, nil, d.Remove(rel))
			case 14:
				_, err := d.Exists(rel)
				leak(t, nil, err)
			case 15:
				f, err := d.OpenDir(rel)
				if err == nil {
					f.Close()
				}
				leak(t, nil, err)
			case 16, 17, 18, 19, 20:
				fuzzHandle(t, d, rel, op)
			case 28:
				_, err := d.ReadDir(rel)
				leak(t, nil, err)
			case 29:
				leak(t, nil, d.RemoveAll(rel))
			case 30:
				fuzzHandle(t, d, rel, 21)
			}
		}
		if after := h.snapshot(t); after != before {
			t.Fatalf("host changed:\n%s\nwas\n%s", after, before)
		}
		if watch != nil && watch.Opened() {
			t.Fatal("a planted device node, FIFO or socket was opened")
		}
		// The tree itself may only hold what the plugin's own writes put there
		// besides the planted entries: no host content was copied in.
		_ = filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
			if err == nil && fi.Mode().IsRegular() && fi.Size() < 1<<20 {
				if b, _ := os.ReadFile(p); bytes.Contains(b, []byte(secret)) && !linked(h.file, p) {
					t.Fatalf("host content copied into %s", p)
				}
			}
			return nil
		})
	})
}

// watchToo adds p to w, made on the first node planted.
func watchToo(t *testing.T, w *opentest.Watch, p string) *opentest.Watch {
	if w == nil {
		return opentest.NewWatch(t, p)
	}
	w.Add(t, p)
	return w
}

// fuzzHandle runs a Handle operation on rel's last name in its parent,
// opened as a handle.
func fuzzHandle(t *testing.T, d Dir, rel string, op byte) {
	h, err := d.OpenHandle(filepath.Dir(rel))
	if err != nil {
		leak(t, nil, err)
		return
	}
	defer h.Close()
	name := filepath.Base(rel)
	switch op {
	case 16:
		f, err := within(t, func() (*os.File, error) { return h.Open(name) })
		leakOpened(t, f, err)
	case 17:
		f, err := h.Create(name, 0o644, -1, -1)
		if err == nil {
			_, _ = f.Write([]byte("plugin"))
			f.Close()
		}
		leak(t, nil, err)
	case 18:
		leak(t, nil, h.Mkdir(name, 0o755, -1, -1))
	case 19:
		_, err := within(t, func() (int64, error) {
			return CopyFile(h, name, h, name+".copy", 1<<20, Attrs{Perm: 0o644, UID: -1, GID: -1})
		})
		leak(t, nil, err)
	case 20:
		sub, err := h.Sub(name)
		if err == nil {
			_, err = sub.readDir()
			sub.Close()
		}
		leak(t, nil, err)
	case 21:
		leak(t, nil, h.RemoveAll(name))
	}
}

// plantable reports whether rel does not exist and each of its parents under
// root is a directory or missing (no symlink, no special file on the way).
func plantable(root, rel string) bool {
	parts := strings.Split(rel, "/")
	p := root
	for i, part := range parts {
		p = filepath.Join(p, part)
		fi, err := os.Lstat(p)
		if err != nil {
			return os.IsNotExist(err)
		}
		if i == len(parts)-1 || !fi.IsDir() {
			return false
		}
	}
	return false
}

// sanitize makes a fuzzed name a clean relative path (the plugin only builds
// those); it keeps deep nesting and long names, which the kernel may refuse.
func sanitize(s string) string {
	s = strings.Map(func(r rune) rune {
		if r == 0 || r == '\n' {
			return -1
		}
		return r
	}, s)
	var parts []string
	for _, p := range strings.Split(s, "/") {
		if p != "" && p != "." && p != ".." {
			parts = append(parts, p)
		}
	}
	return strings.Join(parts, "/")
}

func linked(a, b string) bool {
	fa, err1 := os.Stat(a)
	fb, err2 := os.Stat(b)
	return err1 == nil && err2 == nil && os.SameFile(fa, fb)
}

func leak(t *testing.T, b []byte, err error) {
	t.Helper()
	if bytes.Contains(b, []byte(secret)) {
		t.Fatalf("read host content: %q", b)
	}
	if err != nil && strings.Contains(err.Error(), secret) {
		t.Fatalf("error quotes host content: %v", err)
	}
}

// leakOpened checks what an open let through: the start of the file, read
// and closed, or the error.
func leakOpened(t *testing.T, f *os.File, err error) {
	t.Helper()
	if err == nil {
		b := make([]byte, 64)
		n, _ := f.Read(b)
		f.Close()
		leak(t, b[:n], nil)
	}
	leak(t, nil, err)
}
