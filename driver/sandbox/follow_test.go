package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentkernel/agentkernel-pool/driver/allocfs"
)

// syncBuf is a strings.Builder safe for a test to read while Follow writes.
type syncBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestFollowResumesFromOffsetsWithoutLossOrDuplicates(t *testing.T) {
	r, ref := localSandbox(t)
	script := `i=0; while [ $i -lt 40 ]; do echo "out $i"; echo "err $i" >&2; i=$((i+1)); sleep 0.02; done; exit 5`
	if err := r.Launch(ctxT(t, 10*time.Second), ref, Spec{ID: "resume", Command: "/bin/sh", Args: []string{"-c", script}}); err != nil {
		t.Fatal(err)
	}
	var out, errOut syncBuf
	var saved Offsets
	var mu sync.Mutex
	save := func(o Offsets) { mu.Lock(); saved = o; mu.Unlock() }

	// Follow in short pieces, as a plugin restarted again and again would.
	for round := 0; ; round++ {
		if round > 200 {
			t.Fatal("command did not finish")
		}
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Millisecond)
		mu.Lock()
		from := saved
		mu.Unlock()
		st, err := r.Follow(ctx, ref, "resume", from, &out, &errOut, save)
		cancel()
		if errors.Is(err, context.DeadlineExceeded) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if st != (ExitStatus{Code: 5}) {
			t.Errorf("status %+v", st)
		}
		if round < 2 {
			t.Errorf("finished in round %d; the test wants several", round)
		}
		break
	}
	var wantOut, wantErr strings.Builder
	for i := 0; i < 40; i++ {
		fmt.Fprintf(&wantOut, "out %d\n", i)
		fmt.Fprintf(&wantErr, "err %d\n", i)
	}
	if out.String() != wantOut.String() {
		t.Errorf("stdout:\n%s\nwant:\n%s", out.String(), wantOut.String())
	}
	if errOut.String() != wantErr.String() {
		t.Errorf("stderr:\n%s\nwant:\n%s", errOut.String(), wantErr.String())
	}
	if saved != (Offsets{Stdout: int64(wantOut.Len()), Stderr: int64(wantErr.Len())}) {
		t.Errorf("final offsets %+v", saved)
	}
}

func TestFollowAfterExitReturnsRemainingOutput(t *testing.T) {
	r, ref := localSandbox(t)
	if err := r.Launch(ctxT(t, 10*time.Second), ref, Spec{ID: "done", Command: "/bin/sh", Args: []string{"-c", "echo hello world; exit 1"}}); err != nil {
		t.Fatal(err)
	}
	waitExited(t, r, ref, "done")
	var out strings.Builder
	st, err := r.Follow(ctxT(t, 5*time.Second), ref, "done", Offsets{Stdout: 6}, &out, nil, nil)
	if err != nil || st.Code != 1 || out.String() != "world\n" {
		t.Fatalf("follow from offset 6: %q %+v %v", out.String(), st, err)
	}
}

func TestFollowStopsOnWriterError(t *testing.T) {
	r, ref := localSandbox(t)
	if err := r.Launch(ctxT(t, 10*time.Second), ref, Spec{ID: "w", Command: "/bin/sh", Args: []string{"-c", "echo x"}}); err != nil {
		t.Fatal(err)
	}
	broken := errors.New("fifo closed")
	_, err := r.Follow(ctxT(t, 5*time.Second), ref, "w", Offsets{}, writerFunc(func([]byte) (int, error) { return 0, broken }), nil, nil)
	if !errors.Is(err, broken) {
		t.Fatalf("err = %v", err)
	}
}

func TestFollowUnknownRun(t *testing.T) {
	r, ref := localSandbox(t)
	_, err := r.Follow(ctxT(t, time.Second), ref, "never", Offsets{}, nil, nil, nil)
	if !errors.Is(err, ErrNoRun) {
		t.Fatalf("err = %v, want ErrNoRun", err)
	}
	if _, _, err := r.Status(ref, "never"); !errors.Is(err, ErrNoRun) {
		t.Fatalf("status err = %v, want ErrNoRun", err)
	}
}

func TestReadExitRecords(t *testing.T) {
	dir := t.TempDir()
	files := allocfs.New(dir, "0123456789abcdef")
	if err := os.Mkdir(filepath.Join(dir, "run"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		content string
		want    ExitStatus
		exited  bool
	}{
		{"", ExitStatus{}, false},
		{"3", ExitStatus{}, false}, // no newline yet: not complete
		{"3\n", ExitStatus{Code: 3}, true},
		{"143\n", ExitStatus{Code: 143, Signal: 15}, true},
		{"255\n", ExitStatus{Code: 255}, true},
		{"137 9\n", ExitStatus{Code: 137, Signal: 9}, true},
		{"130 0\n", ExitStatus{Code: 130}, true},
	} {
		if err := os.WriteFile(filepath.Join(dir, "run", fileExit), []byte(tc.content), 0o600); err != nil {
			t.Fatal(err)
		}
		st, exited, err := readExit(files, "run")
		if err != nil || exited != tc.exited || st != tc.want {
			t.Errorf("%q: %+v exited=%v err=%v", tc.content, st, exited, err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "run", fileExit), []byte("x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := readExit(files, "run"); err == nil {
		t.Error("bad record accepted")
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

func waitExited(t *testing.T, r *Runner, ref Ref, runID string) ExitStatus {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if st, exited, err := r.Status(ref, runID); err != nil {
			t.Fatal(err)
		} else if exited {
			return st
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("run %s did not exit", runID)
	return ExitStatus{}
}

func TestFollowLargeOutput(t *testing.T) {
	r, ref := localSandbox(t)
	// 20 MiB, more than several copy rounds, written at once before exit.
	if err := r.Launch(ctxT(t, 10*time.Second), ref, Spec{ID: "big", Command: "/bin/sh", Args: []string{"-c", "head -c 20971520 /dev/zero; echo e >&2"}}); err != nil {
		t.Fatal(err)
	}
	waitExited(t, r, ref, "big")
	var n countWriter
	var errOut strings.Builder
	if _, err := r.Follow(ctxT(t, 20*time.Second), ref, "big", Offsets{}, &n, &errOut, nil); err != nil {
		t.Fatal(err)
	}
	if n != 20<<20 || errOut.String() != "e\n" {
		t.Errorf("copied %d bytes of stdout, stderr %q", n, errOut.String())
	}
}

type countWriter int64

func (c *countWriter) Write(p []byte) (int, error) { *c += countWriter(len(p)); return len(p), nil }

// Output and the exit reach the follower as they are written, not at the next
// poll: with polling all but off, Follow still delivers at once.
func TestFollowWakesOnWrites(t *testing.T) {
	r, ref := localSandbox(t)
	r.PollInterval = time.Hour
	if err := r.Launch(ctxT(t, 10*time.Second), ref, Spec{ID: "wake", Command: "/bin/sh", Args: []string{"-c", "echo first; sleep 0.3; echo second; exit 4"}}); err != nil {
		t.Fatal(err)
	}
	var out syncBuf
	begin := time.Now()
	st, err := r.Follow(ctxT(t, 20*time.Second), ref, "wake", Offsets{}, &out, io.Discard, nil)
	if err != nil {
		t.Fatalf("follow with an hour's poll interval: %v (after %s)", err, time.Since(begin))
	}
	if st.Code != 4 || out.String() != "first\nsecond\n" {
		t.Errorf("status %+v, stdout %q; want code 4 and both lines", st, out.String())
	}
}
