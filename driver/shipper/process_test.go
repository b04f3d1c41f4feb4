package shipper

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/agentkernel/agentkernel-pool/driver/allocfs"
	"github.com/agentkernel/agentkernel-pool/driver/sandbox"
)

// TestMain lets this test binary be the output shipper and the log holder, as
// the plugin's binary is in production: startShipper and ensureHolder run
// os.Executable() with the hidden commands.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && (os.Args[1] == ShipCommand || os.Args[1] == HoldCommand) {
		os.Exit(Main(os.Args[1:], os.Stderr))
	}
	os.Exit(m.Run())
}

// Run ships a run's output through a shipper process and a log holder, as the
// production backend does: what the command wrote before and while it is
// followed reaches the task's log in order, the log ends once the run has
// exited, and the exit code is the command's.
func TestShipperProcessShipsRunOutput(t *testing.T) {
	dir := t.TempDir()
	ref := sandbox.Ref{AllocID: "b1000000-0000-0000-0000-000000000000", Task: "sandbox", HostAllocDir: filepath.Join(dir, "sandbox-alloc")}
	const runID = "ship1"
	run := ref.RunDir(runID)
	if err := os.MkdirAll(run, 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(name, s string) {
		t.Helper()
		f, err := os.OpenFile(filepath.Join(run, name), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.WriteString(s); err != nil {
			t.Fatal(err)
		}
	}
	write("pid", "999999998 999999999\n") // no such processes: nothing here reads them
	write("stdout", "one\n")

	job := Job{Ref: ref, RunID: runID, Stdout: filepath.Join(dir, "stdout.fifo"), Stderr: filepath.Join(dir, "stderr.fifo"),
		Offsets: filepath.Join(dir, "offsets")}
	for _, p := range []string{job.Stdout, job.Stderr} {
		if err := syscall.Mkfifo(p, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	stdout, stderr := logReader(t, job.Stdout), logReader(t, job.Stderr)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	type result struct {
		st  sandbox.ExitStatus
		err error
	}
	done := make(chan result, 1)
	go func() {
		st, err := Run(ctx, job)
		done <- result{st, err}
	}()
	expectLine(t, stdout, "one")
	if pid := shipperPID(job); pid == 0 {
		t.Error("no shipper process recorded while the run goes on")
	}
	write("stdout", "two\n")
	expectLine(t, stdout, "two")
	write("exit", "3\n")
	select {
	case r := <-done:
		if r.err != nil || r.st.Code != 3 {
			t.Fatalf("ship = %+v, %v; want exit code 3", r.st, r.err)
		}
	case <-ctx.Done():
		t.Fatal("ship did not return after the run exited")
	}
	expectEOF(t, stdout)
	expectEOF(t, stderr)
	if pid := shipperPID(job); pid != 0 {
		t.Errorf("shipper %d still runs after its run was shipped", pid)
	}
	if pid := holderPID(job); pid != 0 {
		t.Errorf("log holder %d still runs after its run was shipped", pid)
	}
}

// A shipper that cannot do its work is started again a few times, then the
// run is given up with what the shipper said last, so the task's event
// names the cause.
func TestShipperThatKeepsFailingSaysWhy(t *testing.T) {
	dir := t.TempDir()
	ref := sandbox.Ref{AllocID: "b2000000-0000-0000-0000-000000000000", Task: "sandbox", HostAllocDir: filepath.Join(dir, "sandbox-alloc")}
	const runID = "ship2"
	if err := os.MkdirAll(ref.RunDir(runID), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ref.RunDir(runID), "pid"), []byte("999999998 999999999\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// Directories where the task's log FIFOs should be: nothing a shipper
	// can write to.
	job := Job{Ref: ref, RunID: runID, Stdout: filepath.Join(dir, "stdout.fifo"), Stderr: filepath.Join(dir, "stderr.fifo"),
		Offsets: filepath.Join(dir, "offsets")}
	for _, p := range []string{job.Stdout, job.Stderr} {
		if err := os.Mkdir(p, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	_, err := Run(ctx, job)
	if err == nil || !strings.Contains(err.Error(), "exited 5 times") || !strings.Contains(err.Error(), "stdout.fifo") {
		t.Fatalf("Run = %v; want the shipper given up, saying what it could not open", err)
	}
}

// What a shipper said last reaches the task's error quoted and cut: it may
// quote what it read from the sandbox.
func TestLastWordsAreQuoted(t *testing.T) {
	log := filepath.Join(t.TempDir(), "x.shipper.log")
	said := "ship run r: \x1b[2J\x1b]0;owned\x07" + strings.Repeat("\x1b[31m\r", 100) + "\n"
	if err := os.WriteFile(log, []byte("started\n"+said), 0o600); err != nil {
		t.Fatal(err)
	}
	got := lastWords(log)
	if strings.ContainsAny(got, "\x1b\x07\r") || len(got) > 600 || !strings.HasPrefix(got, `: "ship run r: \x1b[2J`) {
		t.Errorf("last words %d bytes: %.100q", len(got), got)
	}
}

// A command that renames its run dir away and puts a symlink to a host dir
// in its place is caught tampering, not taken for a purged sandbox: the
// instant its run dir is absent does not end the shipping as "gone".
func TestRunDirSwappedForASymlinkIsTampering(t *testing.T) {
	dir := t.TempDir()
	ref := sandbox.Ref{AllocID: "b3000000-0000-0000-0000-000000000000", Task: "sandbox", HostAllocDir: filepath.Join(dir, "sandbox-alloc")}
	const runID = "ship3"
	run := ref.RunDir(runID)
	if err := os.MkdirAll(run, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(run, "pid"), []byte("999999998 999999999\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(run, "stdout"), []byte("before\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	job := Job{Ref: ref, RunID: runID, Stdout: filepath.Join(dir, "stdout.fifo"), Stderr: filepath.Join(dir, "stderr.fifo"),
		Offsets: filepath.Join(dir, "offsets")}
	for _, p := range []string{job.Stdout, job.Stderr} {
		if err := syscall.Mkfifo(p, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	stdout, _ := logReader(t, job.Stdout), logReader(t, job.Stderr)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := Run(ctx, job)
		done <- err
	}()
	expectLine(t, stdout, "before")
	// Absent for longer than the shipper's purge watch looks (every
	// second), as a command on a loaded machine may leave it.
	if err := os.Rename(run, run+".old"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1200 * time.Millisecond)
	hostDir := t.TempDir()
	if err := os.Symlink(hostDir, run); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, allocfs.ErrTampered) {
			t.Fatalf("Run = %v; want the run's dir named as tampered with", err)
		}
	case <-ctx.Done():
		t.Fatal("Run did not return after the run dir was swapped")
	}
}
