//go:build linux

package allocfs

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agentkernel/agentkernel-pool/internal/opentest"
	"github.com/agentkernel/agentkernel-pool/internal/untrusted"
)

// runFiles are the files of a run the plugin reads or checks, and where a
// sandbox plants something in their place.
var runFiles = []string{"stdout", "stderr", "exit", "pid", "exec-0a1b2c3d4e5f.pid", "launched", "argv"}

// ways runs fn once per way of resolving a path: openat2, and the component
// walk of kernels without it.
func ways(t *testing.T, fn func(t *testing.T, d Dir, root string)) {
	for _, walk := range []bool{false, true} {
		name := map[bool]string{false: "openat2", true: "walk"}[walk]
		t.Run(name, func(t *testing.T) {
			d, root := sandbox(t)
			d.walk = walk
			fn(t, d, root)
		})
	}
}

// A device, FIFO or socket the sandbox put in place of a run file is
// refused by every read, as tampering, and never opened: no open event
// reaches the node, and a writer blocked opening a planted FIFO is still
// blocked (any open for reading would have released it).
func TestPlantedNodesAreNeverOpened(t *testing.T) {
	ways(t, func(t *testing.T, d Dir, root string) {
		for _, file := range runFiles {
			for _, kind := range opentest.Kinds {
				t.Run(file+"/"+kind, func(t *testing.T) {
					rel := "alloc/.agentkernel/run1/" + file
					p := filepath.Join(root, rel)
					_ = os.Remove(p)
					opentest.Plant(t, kind, p)
					w := opentest.NewWatch(t, p)
					var writer *opentest.Writer
					if kind == opentest.FIFO {
						writer = opentest.NewWriter(t, p)
					}

					_, errRecord := within(t, func() ([]byte, error) { return d.ReadRecord(rel, 64) })
					_, errOpen := within(t, func() (*os.File, error) { return d.OpenFile(rel) })
					h, err := d.OpenHandle("alloc/.agentkernel/run1")
					if err != nil {
						t.Fatal(err)
					}
					defer h.Close()
					_, errHandle := within(t, func() (*os.File, error) { return h.Open(file) })
					_, errCopy := within(t, func() (int64, error) {
						return CopyFile(h, file, h, file+".copy", 1<<20, Attrs{Perm: 0o644, UID: -1, GID: -1})
					})
					for op, err := range map[string]error{"ReadRecord": errRecord, "OpenFile": errOpen, "Handle.Open": errHandle, "CopyFile": errCopy} {
						if !errors.Is(err, ErrTampered) {
							t.Errorf("%s of a %s: %v, want tampered", op, kind, err)
						}
					}
					if w.Opened() {
						t.Errorf("the planted %s was opened", kind)
					}
					if writer != nil && writer.Released() {
						t.Error("a writer blocked on the planted FIFO was released: the plugin opened it")
					}
				})
			}
		}
	})
}

// Where a directory is wanted (the run dir, the runs dir), a node is
// refused without being opened.
func TestPlantedNodesInPlaceOfDirsAreNeverOpened(t *testing.T) {
	ways(t, func(t *testing.T, d Dir, root string) {
		for _, dir := range []string{"alloc/.agentkernel/run1", "alloc/.agentkernel"} {
			for _, kind := range opentest.Kinds {
				t.Run(filepath.Base(dir)+"/"+kind, func(t *testing.T) {
					p := filepath.Join(root, dir)
					if err := os.RemoveAll(p); err != nil {
						t.Fatal(err)
					}
					opentest.Plant(t, kind, p)
					w := opentest.NewWatch(t, p)
					var writer *opentest.Writer
					if kind == opentest.FIFO {
						writer = opentest.NewWriter(t, p)
					}
					if f, err := within(t, func() (*os.File, error) { return d.OpenDir(dir) }); !errors.Is(err, ErrTampered) {
						if err == nil {
							f.Close()
						}
						t.Errorf("OpenDir of a %s: %v, want tampered", kind, err)
					}
					if _, err := d.ReadDir(dir); !errors.Is(err, ErrTampered) {
						t.Errorf("ReadDir of a %s: %v, want tampered", kind, err)
					}
					if h, err := d.OpenHandle(dir); !errors.Is(err, ErrTampered) {
						if err == nil {
							h.Close()
						}
						t.Errorf("OpenHandle of a %s: %v, want tampered", kind, err)
					}
					if _, err := d.ReadRecord(dir+"/exit", 64); !errors.Is(err, ErrTampered) {
						t.Errorf("ReadRecord beneath a %s: %v, want tampered", kind, err)
					}
					if w.Opened() {
						t.Errorf("the planted %s was opened", kind)
					}
					if writer != nil && writer.Released() {
						t.Error("a writer blocked on the planted FIFO was released: the plugin opened it")
					}
				})
			}
		}
	})
}

// A symlink or a hard link in place of a run file is refused, and the host
// file it leads to is not opened either.
func TestLinksToHostFilesAreNeverOpened(t *testing.T) {
	ways(t, func(t *testing.T, d Dir, root string) {
		for _, file := range runFiles {
			for _, pl := range plants {
				if !strings.Contains(pl.name, "host file") {
					continue
				}
				t.Run(file+"/"+pl.name, func(t *testing.T) {
					host := newHost(t)
					rel := "alloc/.agentkernel/run1/" + file
					p := filepath.Join(root, rel)
					_ = os.Remove(p)
					pl.make(t, host, p)
					w := opentest.NewWatch(t, host.file)
					if _, err := d.ReadRecord(rel, 64); !errors.Is(err, ErrTampered) {
						t.Errorf("ReadRecord: %v, want tampered", err)
					}
					if f, err := d.OpenFile(rel); !errors.Is(err, ErrTampered) {
						if err == nil {
							f.Close()
						}
						t.Errorf("OpenFile: %v, want tampered", err)
					}
					if w.Opened() {
						t.Error("the host file was opened")
					}
				})
			}
		}
	})
}

// A regular run file is read as before, both ways: the reopen reads the
// file the resolution found.
func TestRunFilesReadBothWays(t *testing.T) {
	ways(t, func(t *testing.T, d Dir, root string) {
		b, err := d.ReadRecord("alloc/.agentkernel/run1/pid", 64)
		if err != nil || string(b) != "12 13\n" {
			t.Fatalf("pid record: %q %v", b, err)
		}
		f, err := d.OpenDir("alloc/.agentkernel/run1")
		if err != nil {
			t.Fatal(err)
		}
		names, err := f.Readdirnames(-1)
		f.Close()
		if err != nil || len(names) != 3 {
			t.Fatalf("run dir lists %v %v", names, err)
		}
	})
}

// Names the sandbox chose reach errors quoted and cut: no newline, no
// terminal escape, whatever error carries them.
func TestErrorsQuoteTheSandboxsNames(t *testing.T) {
	evil := "x\n\x1b[31mlevel=ERROR forged\x1b[0m" + strings.Repeat("\r", 200)
	ways(t, func(t *testing.T, d Dir, root string) {
		dir := filepath.Join(root, "alloc", evil)
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		opentest.Plant(t, opentest.CharDevice, filepath.Join(dir, "dev"))
		if err := os.Symlink("/etc", filepath.Join(dir, "link")); err != nil {
			t.Fatal(err)
		}
		h, err := d.OpenHandle("alloc/" + evil)
		if err != nil {
			t.Fatal(err)
		}
		defer h.Close()
		var errs []error
		_, err = d.ReadRecord("alloc/"+evil+"/dev", 64)
		errs = append(errs, err)
		_, err = d.OpenFile("alloc/" + evil + "/link/passwd")
		errs = append(errs, err)
		_, err = d.OpenFile("alloc/" + evil + "/none")
		errs = append(errs, err)
		_, err = h.Open("dev")
		errs = append(errs, err)
		_, err = h.Sub("link")
		errs = append(errs, err)
		errs = append(errs, h.Mkdir(evil+"/x", 0o755, -1, -1))
		for _, err := range errs {
			if err == nil {
				t.Fatal("no error")
			}
			msg := err.Error()
			if strings.ContainsAny(msg, "\n\r\x1b") {
				t.Errorf("error carries the name raw: %q", msg)
			}
			if len(msg) > 2*untrusted.MaxName+100 { // at most two names and the text
				t.Errorf("error of %d bytes: %.100q", len(msg), msg)
			}
		}
	})
}
