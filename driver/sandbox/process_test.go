package sandbox

import (
	"bytes"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

func TestReapOrphansKillsOnlyTheRunsProcesses(t *testing.T) {
	t.Run("launched by exec", func(t *testing.T) { testReap(t, false) })
	t.Run("launched by session", func(t *testing.T) { testReap(t, true) })
}

func testReap(t *testing.T, primed bool) {
	r, ref := localSandbox(t)
	if primed {
		if err := r.Prime(ctxT(t, 10*time.Second), ref); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Launch(ctxT(t, 10*time.Second), ref, Spec{ID: "orphan", Command: "/bin/sleep", Args: []string{"30"}}); err != nil {
		t.Fatal(err)
	}
	if err := awaitPidRecord(ctxT(t, 10*time.Second), ref.files(), runRel("orphan"), 10*time.Second); err != nil {
		t.Fatal(err)
	}
	fields, ok, _ := readRecord(ref.files(), path.Join(runRel("orphan"), filePid))
	if !ok || len(fields) != 2 {
		t.Fatalf("pid record %q", fields)
	}
	if !reapOrphans(ref, "orphan") {
		t.Fatal("nothing killed")
	}
	for _, f := range fields {
		pid, _ := strconv.Atoi(f)
		deadline := time.Now().Add(5 * time.Second)
		for alive(pid) && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if alive(pid) {
			t.Errorf("pid %d alive", pid)
		}
	}
	// A pid record naming some other process (here: this test) kills nothing.
	self := strconv.Itoa(os.Getpid())
	if err := os.WriteFile(filepath.Join(ref.RunDir("orphan"), filePid), []byte(self+" "+self+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	killed := reapOrphans(ref, "orphan")
	os.Remove(filepath.Join(ref.RunDir("orphan"), filePid)) // keep cleanup off this process
	if killed {
		t.Fatal("killed a process that is not the run's")
	}
}

// alive tells whether a process runs: a zombie, dead but not yet reaped by
// whichever process adopted it, does not.
func alive(pid int) bool {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	return i > 0 && i+2 < len(b) && b[i+2] != 'Z'
}
