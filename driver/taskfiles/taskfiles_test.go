package taskfiles

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/agentkernel/agentkernel-pool/driver/allocfs"
)

const hostSecret = "HOST-ONLY-TASKFILES-77"

// fixture is a task's alloc dir and a sandbox's, with the trees made, and a
// host dir outside both holding a secret.
type fixture struct {
	task, sandbox, host, secret string
	sync                        *Sync
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{task: t.TempDir(), sandbox: t.TempDir(), host: t.TempDir()}
	f.secret = filepath.Join(f.host, "token")
	write(t, f.secret, hostSecret, 0o600)
	for _, d := range []string{"agent/local", "agent/secrets", "agent/private", "alloc/data"} {
		mkdir(t, filepath.Join(f.task, d))
	}
	for _, d := range []string{"sandbox/local", "sandbox/secrets", "alloc/data"} {
		mkdir(t, filepath.Join(f.sandbox, d))
	}
	f.sync = &Sync{
		Task:      allocfs.New(f.task, "task-alloc").WithHardLinks(),
		Sandbox:   allocfs.New(f.sandbox, "0123456789abcdef"),
		Trees:     Trees("agent", "sandbox"),
		UID:       os.Getuid(),
		GID:       os.Getgid(),
		StatePath: filepath.Join(f.task, "agent/private/files.json"),
	}
	return f
}

func write(t *testing.T, p, content string, mode os.FileMode) {
	t.Helper()
	mkdir(t, filepath.Dir(p))
	if err := os.WriteFile(p, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
}

func mkdir(t *testing.T, p string) {
	t.Helper()
	if err := os.MkdirAll(p, 0o755); err != nil {
		t.Fatal(err)
	}
}

func read(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("read %s: %v", p, err)
	}
	return string(b)
}

// hostState is the host dir's names, modes, sizes and contents.
func (f *fixture) hostState(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	_ = filepath.WalkDir(f.host, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, _ := os.Lstat(p)
		c, _ := os.ReadFile(p)
		b.WriteString(p + " " + fi.Mode().String() + " " + strconv.FormatInt(fi.Size(), 10) + " " + string(c) + "\n")
		return nil
	})
	return b.String()
}

// noSecretIn fails when the host secret was copied anywhere under dir.
func noSecretIn(t *testing.T, dir string) {
	t.Helper()
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if b, _ := os.ReadFile(p); strings.Contains(string(b), hostSecret) {
				fi, _ := os.Lstat(p)
				// The planted hard link itself is exempt: it cannot hide a
				// copy, since every file the plugin makes is new (O_EXCL)
				// and has one link.
				if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Nlink > 1 {
					return nil
				}
				t.Errorf("host content copied into %s", p)
			}
		}
		return nil
	})
}

// What Nomad prepared reaches the sandbox at the same relative places, modes
// kept; symlinks stay symlinks; special files are left out.
func TestInCopiesTheTaskFilesIntoTheSandbox(t *testing.T) {
	f := newFixture(t)
	write(t, filepath.Join(f.task, "agent/local/payload.json"), `{"issue":1}`, 0o644)
	write(t, filepath.Join(f.task, "agent/local/repo/src/main.py"), "print(1)", 0o755)
	write(t, filepath.Join(f.task, "agent/secrets/token.txt"), "s3cret", 0o600)
	write(t, filepath.Join(f.task, "alloc/data/checkout/README"), "hello", 0o644)
	if err := os.Symlink("repo/src/main.py", filepath.Join(f.task, "agent/local/entry")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(f.secret, filepath.Join(f.task, "agent/local/escape")); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(f.task, "agent/local/fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(f.sandbox, "sandbox/local/from-template"), "template", 0o644)
	before := f.hostState(t)
	st, err := f.sync.In()
	if err != nil {
		t.Fatal(err)
	}
	if got := read(t, filepath.Join(f.sandbox, "sandbox/local/payload.json")); got != `{"issue":1}` {
		t.Errorf("payload %q", got)
	}
	if fi, err := os.Stat(filepath.Join(f.sandbox, "sandbox/secrets/token.txt")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("secret: %v %v, want mode 0600", fi, err)
	}
	if fi, err := os.Stat(filepath.Join(f.sandbox, "sandbox/local/repo/src/main.py")); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("script: %v %v, want mode 0755", fi, err)
	}
	if got := read(t, filepath.Join(f.sandbox, "alloc/data/checkout/README")); got != "hello" {
		t.Errorf("alloc/data %q", got)
	}
	for name, want := range map[string]string{"entry": "repo/src/main.py", "escape": f.secret} {
		if l, err := os.Readlink(filepath.Join(f.sandbox, "sandbox/local", name)); err != nil || l != want {
			t.Errorf("symlink %s: %q %v, want it carried as a symlink to %q", name, l, err, want)
		}
	}
	if _, err := os.Lstat(filepath.Join(f.sandbox, "sandbox/local/fifo")); !errors.Is(err, fs.ErrNotExist) || st.Skipped != 1 {
		t.Errorf("fifo copied (%v), skipped %d", err, st.Skipped)
	}
	if got := read(t, filepath.Join(f.sandbox, "sandbox/local/from-template")); got != "template" {
		t.Errorf("the sandbox's own file: %q", got)
	}
	noSecretIn(t, f.sandbox)
	if after := f.hostState(t); after != before {
		t.Fatalf("host changed:\n%s\nwas\n%s", after, before)
	}
}

// What the command created, changed and deleted in local/ and alloc/data is
// in the task's dirs afterwards; what it did in secrets/ is not, and neither
// is what the sandbox's template had there unchanged.
func TestOutCopiesBackWhatTheCommandLeft(t *testing.T) {
	f := newFixture(t)
	write(t, filepath.Join(f.task, "agent/local/keep"), "keep", 0o644)
	write(t, filepath.Join(f.task, "agent/local/change"), "old", 0o644)
	write(t, filepath.Join(f.task, "agent/local/gone"), "gone", 0o644)
	write(t, filepath.Join(f.sandbox, "sandbox/local/from-template"), "template", 0o644)
	if _, err := f.sync.In(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(10 * time.Millisecond) // a later mtime for what the command writes
	write(t, filepath.Join(f.sandbox, "sandbox/local/change"), "new content", 0o640)
	write(t, filepath.Join(f.sandbox, "sandbox/local/out/result.txt"), "result", 0o644)
	write(t, filepath.Join(f.sandbox, "alloc/data/result.bin"), "data", 0o644)
	write(t, filepath.Join(f.sandbox, "sandbox/secrets/leaked"), "no", 0o600)
	if err := os.Remove(filepath.Join(f.sandbox, "sandbox/local/gone")); err != nil {
		t.Fatal(err)
	}
	// A fresh Sync, as after a plugin restart: the state comes from disk.
	again := &Sync{Task: f.sync.Task, Sandbox: f.sync.Sandbox, Trees: f.sync.Trees, StatePath: f.sync.StatePath}
	st, err := again.Out()
	if err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]string{"agent/local/keep": "keep", "agent/local/change": "new content",
		"agent/local/out/result.txt": "result", "alloc/data/result.bin": "data"} {
		if got := read(t, filepath.Join(f.task, p)); got != want {
			t.Errorf("%s = %q, want %q", p, got, want)
		}
	}
	if fi, _ := os.Stat(filepath.Join(f.task, "agent/local/change")); fi.Mode().Perm() != 0o640 {
		t.Errorf("changed file mode %v, want 0640", fi.Mode())
	}
	for _, p := range []string{"agent/local/gone", "agent/local/from-template", "agent/secrets/leaked"} {
		if _, err := os.Lstat(filepath.Join(f.task, p)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s: %v, want it absent", p, err)
		}
	}
	if st.Removed != 1 || st.Files != 3 {
		t.Errorf("stats %+v, want 3 files written and 1 removed", st)
	}
}

// A command plants symlinks to host files and dirs, a symlinked directory, a
// hard link to a host file, a FIFO: the write-back reads nothing outside the
// sandbox, writes nothing outside the task's dirs, carries the symlinks as
// symlinks and leaves out the rest.
func TestOutNeverFollowsWhatTheCommandPlanted(t *testing.T) {
	f := newFixture(t)
	write(t, filepath.Join(f.task, "agent/local/dir/file"), "x", 0o644)
	if _, err := f.sync.In(); err != nil {
		t.Fatal(err)
	}
	before := f.hostState(t)
	sl := filepath.Join(f.sandbox, "sandbox/local")
	for name, target := range map[string]string{"to-file": f.secret, "to-dir": f.host, "up": "../../../../../../.."} {
		if err := os.Symlink(target, filepath.Join(sl, name)); err != nil {
			t.Fatal(err)
		}
	}
	// A directory swapped for a symlink to the host dir: the task's local/dir
	// must not become a way to write there.
	if err := os.RemoveAll(filepath.Join(sl, "dir")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(f.host, filepath.Join(sl, "dir")); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(f.secret, filepath.Join(sl, "hardlink")); err != nil {
		t.Skip("host dir on another filesystem:", err)
	}
	if err := syscall.Mkfifo(filepath.Join(sl, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	st, err := f.sync.Out()
	if err != nil {
		t.Fatal(err)
	}
	if st.Skipped != 2 {
		t.Errorf("skipped %d, want the hard link and the FIFO", st.Skipped)
	}
	for name, want := range map[string]string{"to-file": f.secret, "to-dir": f.host, "dir": f.host} {
		if l, err := os.Readlink(filepath.Join(f.task, "agent/local", name)); err != nil || l != want {
			t.Errorf("%s: %q %v, want a symlink to %q", name, l, err, want)
		}
	}
	noSecretIn(t, f.task)
	if after := f.hostState(t); after != before {
		t.Fatalf("host changed:\n%s\nwas\n%s", after, before)
	}
	// Writing back again through the planted symlinks changes nothing outside.
	write(t, filepath.Join(f.sandbox, "alloc/data/more"), "more", 0o644)
	if _, err := f.sync.Out(); err != nil {
		t.Fatal(err)
	}
	if after := f.hostState(t); after != before {
		t.Fatalf("host changed on the second write-back:\n%s\nwas\n%s", after, before)
	}
}

// Over its bounds a write-back writes nothing and says which bound.
func TestOutLimits(t *testing.T) {
	f := newFixture(t)
	if _, err := f.sync.In(); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		write(t, filepath.Join(f.sandbox, "sandbox/local", "f"+strconv.Itoa(i)), strings.Repeat("x", 100), 0o644)
	}
	f.sync.Limits = Limits{Bytes: 300}
	if _, err := f.sync.Out(); !errors.Is(err, ErrLimit) || !strings.Contains(err.Error(), "more than 300 bytes") {
		t.Fatalf("bytes: %v", err)
	}
	f.sync.Limits = Limits{Entries: 3}
	if _, err := f.sync.Out(); !errors.Is(err, ErrLimit) || !strings.Contains(err.Error(), "more than 3 entries") {
		t.Fatalf("entries: %v", err)
	}
	if entries, _ := os.ReadDir(filepath.Join(f.task, "agent/local")); len(entries) != 0 {
		t.Fatalf("a refused write-back wrote %d files", len(entries))
	}
}

// Refresh brings a template Nomad rendered again into the sandbox, without
// undoing what the command did elsewhere.
func TestRefreshFollowsReRenderedTemplates(t *testing.T) {
	f := newFixture(t)
	write(t, filepath.Join(f.task, "agent/local/config.env"), "V=1", 0o644)
	if _, err := f.sync.In(); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(f.sandbox, "sandbox/local/work"), "mine", 0o644)
	time.Sleep(10 * time.Millisecond)
	write(t, filepath.Join(f.task, "agent/local/config.env"), "V=2", 0o644)
	st, err := f.sync.Refresh()
	if err != nil {
		t.Fatal(err)
	}
	if got := read(t, filepath.Join(f.sandbox, "sandbox/local/config.env")); got != "V=2" || st.Files != 1 {
		t.Errorf("after refresh: %q, %d files", got, st.Files)
	}
	if got := read(t, filepath.Join(f.sandbox, "sandbox/local/work")); got != "mine" {
		t.Errorf("the command's file: %q", got)
	}
}

// A task whose files exceed the bounds fails to start, saying so, and copies
// nothing.
func TestInLimits(t *testing.T) {
	f := newFixture(t)
	for i := range 4 {
		write(t, filepath.Join(f.task, "alloc/data", "f"+strconv.Itoa(i)), strings.Repeat("x", 100), 0o644)
	}
	f.sync.Limits = Limits{Bytes: 300}
	if _, err := f.sync.In(); !errors.Is(err, ErrLimit) || !strings.Contains(err.Error(), "more than 300 bytes") {
		t.Fatalf("in over the byte bound: %v", err)
	}
	if entries, _ := os.ReadDir(filepath.Join(f.sandbox, "alloc/data")); len(entries) != 0 {
		t.Fatalf("a refused copy in wrote %d files", len(entries))
	}
}
