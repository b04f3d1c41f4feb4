package sandbox

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/nomad/api"

	"github.com/agentkernel/agentkernel-pool/driver/allocfs"
	"github.com/agentkernel/agentkernel-pool/internal/opentest"
)

const hostSecret = "HOST-ONLY-4f1d9a"

// hostSide is what the sandbox must never reach: a root-only file with a
// secret, and a dir, both outside the allocation. check fails the test when
// anything in it changed (content, mode, owner, mtime, names).
type hostSide struct{ dir, file string }

func newHostSide(t *testing.T) hostSide {
	t.Helper()
	dir := t.TempDir()
	h := hostSide{dir: dir, file: filepath.Join(dir, "token")}
	if err := os.WriteFile(h.file, []byte(hostSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return h
}

func (h hostSide) state(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	_ = filepath.WalkDir(h.dir, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		var st syscall.Stat_t
		if err := syscall.Lstat(p, &st); err != nil {
			return err
		}
		c, _ := os.ReadFile(p)
		b.WriteString(strings.Join([]string{p, itoa(st.Mode), itoa(st.Uid), itoa(st.Gid), itoa(st.Size), itoa(st.Mtim.Nano()), string(c)}, " ") + "\n")
		return nil
	})
	return b.String()
}

func itoa[T int64 | uint32](n T) string { return strconv.FormatInt(int64(n), 10) }

// plants are what a sandboxed command puts in place of one of the plugin's
// files or dirs to make the plugin, root on the host, work for it.
var plants = []struct {
	name string
	make func(t *testing.T, h hostSide, p string)
}{
	{"symlink to host file", func(t *testing.T, h hostSide, p string) { mustSymlink(t, h.file, p) }},
	{"symlink to host dir", func(t *testing.T, h hostSide, p string) { mustSymlink(t, h.dir, p) }},
	{"dangling symlink", func(t *testing.T, h hostSide, p string) { mustSymlink(t, filepath.Join(h.dir, "none"), p) }},
	{"fifo", func(t *testing.T, _ hostSide, p string) {
		if err := syscall.Mkfifo(p, 0o666); err != nil {
			t.Fatal(err)
		}
	}},
	{"symlink to /dev/zero", func(t *testing.T, _ hostSide, p string) { mustSymlink(t, "/dev/zero", p) }},
	{"hard link to host file", func(t *testing.T, h hostSide, p string) {
		if err := os.Link(h.file, p); err != nil {
			t.Skip("host file on another filesystem:", err)
		}
	}},
	{opentest.CharDevice, func(t *testing.T, _ hostSide, p string) { opentest.Plant(t, opentest.CharDevice, p) }},
	{opentest.BlockDevice, func(t *testing.T, _ hostSide, p string) { opentest.Plant(t, opentest.BlockDevice, p) }},
	{opentest.Socket, func(t *testing.T, _ hostSide, p string) { opentest.Plant(t, opentest.Socket, p) }},
}

// unopened watches what a plant at p could make the plugin open (p itself,
// and the host file a link there leads to) and returns the check, to call
// after the plugin had its go: none was opened, and a writer blocked on a
// planted FIFO was not released.
func unopened(t *testing.T, h hostSide, p string) func() {
	t.Helper()
	w := opentest.NewWatch(t, h.file)
	w.Add(t, p)
	var writer *opentest.Writer
	if fi, err := os.Lstat(p); err == nil && fi.Mode()&os.ModeNamedPipe != 0 {
		writer = opentest.NewWriter(t, p)
	}
	return func() {
		t.Helper()
		if w.Opened() {
			t.Error("the plugin opened the planted file or the host file behind it")
		}
		if writer != nil && writer.Released() {
			t.Error("a writer blocked on the planted FIFO was released: the plugin opened it")
		}
	}
}

func mustSymlink(t *testing.T, target, p string) {
	t.Helper()
	if err := os.Symlink(target, p); err != nil {
		t.Fatal(err)
	}
}

func replace(t *testing.T, p string, plant func(string)) {
	t.Helper()
	if err := os.RemoveAll(p); err != nil {
		t.Fatal(err)
	}
	plant(p)
}

// noLeak fails the test when the host secret shows up in what the plugin
// produced (output, errors).
func noLeak(t *testing.T, what string, s string) {
	t.Helper()
	if strings.Contains(s, hostSecret) {
		t.Fatalf("%s carries the host file's content: %q", what, s)
	}
}

// bounded runs op and fails the test when it does not end in time.
func bounded(t *testing.T, d time.Duration, op func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { defer close(done); op() }()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatal("the plugin hung on a planted file")
	}
}

// A running command replaces one of its run's files (or a dir above them):
// following its output, reading its status, signalling it, cleaning it up and
// reaping it neither read nor change anything on the host, open neither what
// was planted nor a host file behind it, end in time, and say the sandbox
// tampered with the file.
func TestRunningCommandCannotMakeThePluginReachTheHost(t *testing.T) {
	for _, entry := range []string{fileStdout, fileStderr, fileExit, filePid, ".", ".."} {
		for _, pl := range plants {
			name := entry
			switch entry {
			case ".":
				name = "run dir"
			case "..":
				name = runDirName
			}
			t.Run(name+"/"+pl.name, func(t *testing.T) {
				r, ref := localSandbox(t)
				h := newHostSide(t)
				ctx := ctxT(t, 20*time.Second)
				if err := r.Launch(ctx, ref, Spec{ID: "evil", Command: "/bin/sh", Args: []string{"-c", "echo before; exec sleep 30"}}); err != nil {
					t.Fatal(err)
				}
				waitFile(t, filepath.Join(ref.RunDir("evil"), fileStdout), "before")
				before := h.state(t)
				planted := filepath.Clean(filepath.Join(ref.RunDir("evil"), entry))
				replace(t, planted, func(p string) { pl.make(t, h, p) })
				checkUnopened := unopened(t, h, planted)

				var out, errOut bytes.Buffer
				var ferr error
				bounded(t, 5*time.Second, func() {
					fctx, cancel := context.WithTimeout(ctx, 3*time.Second)
					defer cancel()
					_, ferr = r.Follow(fctx, ref, "evil", Offsets{}, &out, &errOut, nil)
				})
				noLeak(t, "stdout", out.String())
				noLeak(t, "stderr", errOut.String())
				if ferr == nil || !errors.Is(ferr, allocfs.ErrTampered) {
					t.Fatalf("follow: %v, want the sandbox named as tampering", ferr)
				}
				noLeak(t, "follow error", ferr.Error())
				if !strings.Contains(ferr.Error(), "sandbox 01234567 tampered with ") {
					t.Errorf("follow error %q does not name the sandbox", ferr)
				}
				bounded(t, 5*time.Second, func() {
					_, _, err := r.Status(ref, "evil")
					if err != nil {
						noLeak(t, "status error", err.Error())
					}
					if entry == filePid || entry == "." || entry == ".." {
						sctx, cancel := context.WithTimeout(ctx, 3*time.Second)
						defer cancel()
						if err := r.Signal(sctx, ref, "evil", "SIGTERM"); err == nil {
							t.Error("signal through a planted pid record went through")
						} else {
							noLeak(t, "signal error", err.Error())
						}
					}
				})
				checkUnopened()
				if after := h.state(t); after != before {
					t.Fatalf("the host side changed:\n%s\nwas\n%s", after, before)
				}
				// Reaping kills the command; in this fake sandbox, which runs
				// on the host, its supervisor would then write the exit
				// record through the planted symlink, which in a real sandbox
				// resolves inside it. So it comes after the check.
				bounded(t, 5*time.Second, func() { Reap(ref, "evil") })
			})
		}
	}
}

// Before a launch, a planted run dir, env or argv file, or launched marker
// makes the launch fail with the sandbox named, and makes the
// host write nothing outside the sandbox. No exec happens: the host refuses
// before it would hand the launch to the sandbox.
func TestPlantedLaunchFilesFailTheLaunch(t *testing.T) {
	for _, entry := range []struct{ name, rel string }{
		{runDirName, "alloc/" + runDirName},
		{"run dir", "alloc/" + runDirName + "/evil"},
		{"env file", "sandbox/secrets/agentkernel-evil.env"},
		{"argv file", "alloc/" + runDirName + "/evil/" + fileArgv},
		{"launched marker", "alloc/" + runDirName + "/evil/" + fileLaunched},
	} {
		for _, pl := range plants {
			t.Run(entry.name+"/"+pl.name, func(t *testing.T) {
				r, ref := localSandbox(t)
				h := newHostSide(t)
				ctx := ctxT(t, 20*time.Second)
				if err := r.Prime(ctx, ref); err != nil {
					t.Fatal(err)
				}
				if err := os.MkdirAll(ref.RunDir("evil"), 0o777); err != nil {
					t.Fatal(err)
				}
				inner := r.exec
				r.exec = func(ctx context.Context, ref Ref, tty bool, cmd []string, stdin io.Reader, stdout, stderr io.Writer, resize <-chan api.TerminalSize) (int, error) {
					t.Errorf("launch fell back to an exec: %q", cmd[len(cmd)-1])
					return inner(ctx, ref, tty, cmd, stdin, stdout, stderr, resize)
				}
				before := h.state(t)
				replace(t, filepath.Join(ref.HostAllocDir, entry.rel), func(p string) { pl.make(t, h, p) })
				var err error
				bounded(t, 5*time.Second, func() {
					err = r.Launch(ctx, ref, Spec{ID: "evil", Command: "/bin/true", Env: map[string]string{"A": "b"}})
				})
				if err == nil {
					t.Fatal("launch went through")
				}
				if !errors.Is(err, allocfs.ErrTampered) && !errors.Is(err, ErrAlreadyLaunched) {
					t.Errorf("launch error %v: want the sandbox named as tampering", err)
				}
				noLeak(t, "launch error", err.Error())
				if after := h.state(t); after != before {
					t.Fatalf("the host side changed:\n%s\nwas\n%s", after, before)
				}
			})
		}
	}
}

// The command swaps its output file for a symlink to a host file after the
// shipper opened it, keeps writing, and waits for a plugin restart: the
// shipper in place reads on from what it opened, and the restarted one
// refuses the swapped name; the host file's content is shipped by neither.
func TestSwapAfterOpenThenRestart(t *testing.T) {
	r, ref := localSandbox(t)
	h := newHostSide(t)
	ctx := ctxT(t, 20*time.Second)
	dir, cwd := ref.RunDir("swap"), t.TempDir()
	script := `echo one; while [ ! -e go ]; do sleep 0.02; done; ln -sf ` + h.file + ` stdout.new; mv -f stdout.new ` + dir + `/stdout; echo two; touch swapped; exec sleep 30`
	if err := r.Launch(ctx, ref, Spec{ID: "swap", Command: "/bin/sh", Args: []string{"-c", "cd " + cwd + " && " + script}}); err != nil {
		t.Fatal(err)
	}
	var out syncBuf
	var saved Offsets
	fctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		_, err := r.Follow(fctx, ref, "swap", Offsets{}, &out, io.Discard, func(o Offsets) { saved = o })
		done <- err
	}()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(out.String(), "one") && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if err := os.WriteFile(filepath.Join(cwd, "go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for !strings.Contains(out.String(), "two") && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
	if got := out.String(); got != "one\ntwo\n" {
		t.Fatalf("shipped before the restart: %q, want one and two", got)
	}
	var again bytes.Buffer
	_, err := r.Follow(ctxT(t, 3*time.Second), ref, "swap", saved, &again, io.Discard, nil)
	if !errors.Is(err, allocfs.ErrTampered) {
		t.Fatalf("follow after restart: %v, want tampered", err)
	}
	noLeak(t, "output after restart", again.String())
	noLeak(t, "error", err.Error())
}

// A cancelled exec's pid record replaced by anything but a regular file:
// the hang-up gives up at once, saying so, without opening it and without
// an exec into the sandbox.
func TestPlantedExecPidRecordIsNeverOpened(t *testing.T) {
	for _, pl := range plants {
		t.Run(pl.name, func(t *testing.T) {
			r, ref := localSandbox(t)
			logs := &syncWriter{}
			r.Logger = hclog.New(&hclog.LoggerOptions{Output: logs})
			r.exec = func(context.Context, Ref, bool, []string, io.Reader, io.Writer, io.Writer, <-chan api.TerminalSize) (int, error) {
				t.Error("hang-up exec'd with a planted pid record")
				return -1, errors.New("no exec")
			}
			h := newHostSide(t)
			if err := os.MkdirAll(ref.RunDir("evil"), 0o777); err != nil {
				t.Fatal(err)
			}
			rel := filepath.Join(runRel("evil"), "exec-0a1b2c3d4e5f.pid")
			p := filepath.Join(ref.HostAllocDir, rel)
			pl.make(t, h, p)
			check := unopened(t, h, p)
			bounded(t, 5*time.Second, func() { r.hangup(ref, rel) })
			check()
			if l := logs.String(); pl.name != "dangling symlink" && !strings.Contains(l, "tampered with") {
				t.Errorf("the log does not name the tampering: %q", l)
			}
		})
	}
}
