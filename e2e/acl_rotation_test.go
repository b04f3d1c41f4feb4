package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/nomad/api"

	"github.com/agentkernel/agentkernel-pool/driver"
)

// TestACLTokenRotation: the operator writes a new token into token_file and
// deletes the old one, with a sandbox task running and no agent restart. The
// plugin reads the file again and sends the new token from its next call: the driver
// stays usable, the running task ends normally with all its output, and a new
// job runs. No secret reaches the agent log.
func TestACLTokenRotation(t *testing.T) {
	a, tokenFile := aclAgent(t, false)

	// The token file appears after the agent started: picked up without a restart.
	unhealthyWith(t, a, 60*time.Second, "token_file", "no such file")
	first := pluginToken(t, a, "agentkernel-pool", aclPolicy(t))
	writeToken(t, tokenFile, first)
	if d, ok := a.WaitDriver(driver.Name, 60*time.Second, func(d *api.DriverInfo) bool { return d.Healthy }); !ok {
		t.Fatalf("driver not healthy after token_file was written: %+v", d)
	}
	waitWarm(t, a, "dev", 1)

	marker := filepath.Join(t.TempDir(), "m")
	long := runJob(t, a, jobHCL(t, "long.nomad.hcl", "MARKER", marker))
	waitTask(t, a, long.ID, "agent", "running", 60*time.Second)
	waitFor(t, 30*time.Second, "first output", func() bool { return strings.Contains(aclLogs(t, a, long.ID, "agent"), "before") })

	old, _, err := a.Client.ACLTokens().Self(&api.QueryOptions{AuthToken: first})
	if err != nil {
		t.Fatalf("look up the first token: %v", err)
	}
	second := pluginToken(t, a, "agentkernel-pool", aclPolicy(t))
	writeToken(t, tokenFile, second)
	if _, err := a.Client.ACLTokens().Delete(old.AccessorID, nil); err != nil {
		t.Fatalf("delete the first token: %v", err)
	}
	rotated := time.Now()
	waitFor(t, 60*time.Second, "the plugin to take the new token", func() bool {
		return strings.Contains(a.Log(), "token_file holds a new token")
	})
	if d, ok := a.WaitDriver(driver.Name, 60*time.Second, func(d *api.DriverInfo) bool { return d.Healthy }); !ok {
		t.Fatalf("driver not healthy after the rotation: %+v", d)
	}
	t.Logf("new token in use %s after the rotation", time.Since(rotated).Round(time.Millisecond))

	if err := os.WriteFile(marker+".release", nil, 0o644); err != nil {
		t.Fatal(err)
	}
	ts := waitTask(t, a, long.ID, "agent", "dead", 60*time.Second)
	if code, _ := exitCode(ts); code != 5 {
		t.Errorf("task running across the rotation: exit code %d, want 5; events:\n%s", code, events(ts))
	}
	if out := aclLogs(t, a, long.ID, "agent"); strings.Count(out, "before") != 1 || !strings.Contains(out, "after") {
		t.Errorf("task running across the rotation: output %q, want 'before' once and 'after'", out)
	}

	waitWarm(t, a, "dev", 1)
	alloc := runJob(t, a, jobHCL(t, "command.nomad.hcl"))
	ts2 := waitTask(t, a, alloc.ID, "agent", "dead", 90*time.Second)
	if code, ok := exitCode(ts2); !ok || code != 3 {
		t.Errorf("job after the rotation: exit code %d (found %v), want 3; events:\n%s", code, ok, events(ts2))
	}
	noSecret(t, a, first, ts, ts2)
	noSecret(t, a, second, ts, ts2)
}
