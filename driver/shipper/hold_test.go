package shipper

import (
	"bufio"
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// logReader reads a FIFO the way Nomad's logmon does: it opens it, copies
// until end of file, and never reads it again, though it keeps it open (so
// later writers do not fail: what they write is lost). Lines go to the
// channel, which is closed at end of file.
func logReader(t *testing.T, path string) <-chan string {
	t.Helper()
	lines := make(chan string, 16)
	opened := make(chan *os.File, 1)
	t.Cleanup(func() {
		if f := <-opened; f != nil {
			f.Close()
		}
	})
	go func() {
		defer close(lines)
		f, err := os.Open(path) // blocks until a writer comes, as logmon's open does
		opened <- f
		if err != nil {
			return
		}
		s := bufio.NewScanner(f)
		for s.Scan() {
			lines <- s.Text()
		}
	}()
	return lines
}

// writeOnce is a shipper's life: open the FIFO, write, close.
func writeOnce(t *testing.T, ctx context.Context, path, line string) {
	t.Helper()
	f, err := newFIFOWriter(ctx, path).open()
	if err != nil {
		t.Fatalf("open %s for writing: %v", path, err)
	}
	defer f.Close()
	if _, err := f.WriteString(line + "\n"); err != nil {
		t.Fatalf("write: %v", err)
	}
}

func expectLine(t *testing.T, lines <-chan string, want string) {
	t.Helper()
	select {
	case got, ok := <-lines:
		if !ok {
			t.Fatalf("the reader met end of file before %q: output after a writer's death is lost", want)
		}
		if got != want {
			t.Fatalf("read %q, want %q", got, want)
		}
	case <-time.After(30 * time.Second): // a guard against a hang, not a timing
		t.Fatalf("%q never arrived", want)
	}
}

func expectEOF(t *testing.T, lines <-chan string) {
	t.Helper()
	select {
	case got, ok := <-lines:
		if ok {
			t.Fatalf("read %q, want end of file", got)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the reader never met end of file: the holder keeps the log open")
	}
}

func holdFIFO(t *testing.T, ctx context.Context, path string) <-chan error {
	t.Helper()
	f, err := newFIFOWriter(ctx, path).open()
	if err != nil {
		t.Fatalf("open %s for holding: %v", path, err)
	}
	done := make(chan error, 1)
	go func() { done <- holdFIFOs(ctx, []*heldFIFO{{path: path, f: f}}, func() bool { return false }) }()
	return done
}

// A held log FIFO outlives its writers: a reader that stops at end of file
// (logmon) gets what one shipper wrote and then what the next one writes, and
// end of file only once the holder lets go.
func TestHeldFIFOOutlivesItsWriters(t *testing.T) {
	path := filepath.Join(t.TempDir(), "stdout.fifo")
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	lines := logReader(t, path)
	held := holdFIFO(t, ctx, path)

	writeOnce(t, ctx, path, "from the first shipper")
	expectLine(t, lines, "from the first shipper")
	writeOnce(t, ctx, path, "from the second shipper") // the first one is gone
	expectLine(t, lines, "from the second shipper")

	cancel()
	if err := <-held; err != nil {
		t.Fatalf("hold: %v", err)
	}
	expectEOF(t, lines)
}

// When the reader goes away (logmon replaced by an agent restart), the holder
// holds the FIFO at the same path for the next reader, even a FIFO made anew,
// which then outlives writers too.
func TestHeldFIFOFollowsANewReader(t *testing.T) {
	path := filepath.Join(t.TempDir(), "stdout.fifo")
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	first, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	held := holdFIFO(t, ctx, path)
	first.Close() // logmon gone; the next one makes the FIFO anew
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}

	lines := logReader(t, path)
	w, err := newFIFOWriter(ctx, path).open()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.WriteString("one\n"); err != nil {
		t.Fatal(err)
	}
	expectLine(t, lines, "one")
	// This writer dies only once the holder holds the new FIFO: opened by
	// the reader, this writer and the holder.
	for deadline := time.Now().Add(30 * time.Second); openedHere(path) < 3; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the holder never held the new FIFO")
		}
	}
	w.Close()
	writeOnce(t, ctx, path, "two")
	expectLine(t, lines, "two")

	cancel()
	if err := <-held; err != nil {
		t.Fatalf("hold: %v", err)
	}
	expectEOF(t, lines)
}

// openedHere counts this process's descriptors open on the file at path.
func openedHere(path string) int {
	var want syscall.Stat_t
	if syscall.Stat(path, &want) != nil {
		return 0
	}
	n := 0
	fds, _ := filepath.Glob("/proc/self/fd/*")
	for _, fd := range fds {
		var st syscall.Stat_t
		if syscall.Stat(fd, &st) == nil && st.Dev == want.Dev && st.Ino == want.Ino {
			n++
		}
	}
	return n
}

// A helper is told alive by its command line, and in the middle of its exec,
// when the kernel shows no command line yet, by its executable: taking that
// moment for its death made the driver start shippers over and over on a
// loaded machine and fail the task.
func TestHelperAlive(t *testing.T) {
	const self, run = "/opt/nomad/plugins/agentkernel-pool", "abc-1"
	shipper := []byte(self + "\x00" + ShipCommand + "\x00-run\x00" + run + "\x00")
	running, zombie := []byte("42 (agentkernel-poo) S 1 42"), []byte("42 (agentkernel-poo) Z 1 42")
	for _, c := range []struct {
		name          string
		cmdline, stat []byte
		exe           string
		want          bool
	}{
		{"the helper", shipper, running, self, true},
		{"another run's helper", []byte(self + "\x00" + ShipCommand + "\x00-run\x00abc-2\x00"), running, self, false},
		{"a zombie", shipper, zombie, self, false},
		{"mid-exec: no command line yet, this plugin's executable", nil, running, self, true},
		{"no command line, another executable", nil, running, "/usr/bin/other", false},
		{"no command line, no executable (a kernel thread, an exiting process)", nil, running, "", false},
	} {
		if got := helperAlive(c.cmdline, c.stat, c.exe, self, ShipCommand, run); got != c.want {
			t.Errorf("%s: alive %v, want %v", c.name, got, c.want)
		}
	}
}
