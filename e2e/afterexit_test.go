package e2e

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestNothingWritesAfterTheExit, on an isolated (exec) pool, where alloc/data
// is mounted into the sandbox: the command starts a background writer with
// its cwd in alloc/data, creating a file every 50 ms, and exits. Once the
// task is reported dead, the group's alloc/data on the host no longer
// changes, and the poststop task counts the same files twice, 2 s apart. The
// exit code is the command's, the pool counts no failure for the sandbox
// whose warm task ended with it, and it refills.
func TestNothingWritesAfterTheExit(t *testing.T) {
	a := execPoolAgent(t, "dev", 1, 3)
	alloc := runJob(t, a, jobHCL(t, "writer.nomad.hcl"))
	ts := waitTask(t, a, alloc.ID, "agent", "dead", 120*time.Second)
	data := filepath.Join(a.DataDir, "alloc", alloc.ID, "alloc", "data")
	count := func() int {
		es, err := os.ReadDir(data)
		if err != nil {
			t.Fatal(err)
		}
		return len(es)
	}
	before := count()
	time.Sleep(2 * time.Second)
	after := count()
	// And nothing was written between the exit's report and the first
	// count: no file is newer than the Terminated event.
	var terminated time.Time
	for _, e := range ts.Events {
		if e.Type == "Terminated" {
			terminated = time.Unix(0, e.Time)
		}
	}
	es, _ := os.ReadDir(data)
	for _, e := range es {
		if fi, err := e.Info(); err == nil && fi.ModTime().After(terminated) {
			t.Errorf("%s was written %s after the exit was reported", e.Name(), fi.ModTime().Sub(terminated))
		}
	}
	t.Logf("alloc/data on the host: %d files when the task was reported dead, %d 2 s later; events:\n%s", before, after, events(ts))
	if before == 0 {
		t.Fatal("the writer wrote nothing into alloc/data: the check below would prove nothing")
	}
	if after != before {
		t.Errorf("alloc/data on the host went from %d to %d files after the task was reported dead", before, after)
	}
	if code, ok := exitCode(ts); !ok || code != 0 {
		t.Errorf("exit code %d (reported %v), want 0; events:\n%s", code, ok, events(ts))
	}
	if out := logs(t, a, alloc.ID, "agent"); out != "left-a-writer\n" {
		t.Errorf("the command's output %q", out)
	}
	waitTask(t, a, alloc.ID, "count", "dead", 60*time.Second)
	counted := strings.Fields(logs(t, a, alloc.ID, "count"))
	if len(counted) != 3 || counted[1] != counted[2] || counted[1] == "0" {
		t.Errorf("the poststop task counted %q, want the same files twice", counted)
	}

	sb := sandboxOf(ts)
	log := a.Log()
	ended := ""
	for _, line := range strings.Split(log, "\n") {
		if strings.Contains(line, "ended the sandbox's processes") && strings.Contains(line, "sandbox_alloc_id="+sb) {
			ended = line
		}
	}
	n := regexp.MustCompile(`processes=(\d+)`).FindStringSubmatch(ended)
	took := regexp.MustCompile(`took="?([0-9.e+]+)`).FindStringSubmatch(ended)
	if n == nil || took == nil {
		t.Errorf("the plugin log does not say it ended the processes of sandbox %s (%q)", sb, ended)
	} else {
		ns, _ := strconv.ParseFloat(took[1], 64)
		t.Logf("the plugin ended %s processes of sandbox %s in %s", n[1], sb, time.Duration(ns).Round(time.Microsecond))
	}
	for _, line := range strings.Split(log, "\n") {
		if strings.Contains(line, "warm instance failed") || strings.Contains(line, "died before being claimed") {
			t.Errorf("the pool took the claimed sandbox for a failed warm instance: %s", line)
		}
	}
}
