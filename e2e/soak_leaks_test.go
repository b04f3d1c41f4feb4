package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/nomad/api"

	"github.com/agentkernel/agentkernel-pool/driver/shipper"
	"github.com/agentkernel/agentkernel-pool/internal/nodeattr"
	"github.com/agentkernel/agentkernel-pool/internal/nomadtest"
)

// soakLeaks checks, once the pool has settled, that the soak left nothing
// behind: claim records, warm sandboxes beyond the target, helpers, the runs'
// processes, launch sessions of purged sandboxes, plugin goroutines.
func soakLeaks(t *testing.T, a *nomadtest.Agent, goroutinesBefore int) {
	t.Helper()
	var why error
	deadline := time.Now().Add(3 * time.Minute)
	for time.Now().Before(deadline) {
		if why = soakLeftover(a); why == nil {
			break
		}
		time.Sleep(2 * time.Second)
	}
	if why != nil {
		t.Errorf("after the soak settled: %v", why)
	}
	after := pluginGoroutines(t, a)
	t.Logf("plugin goroutines: %d before the soak, %d after", goroutinesBefore, after)
	if after > goroutinesBefore+25 {
		t.Errorf("plugin goroutines: %d before the soak, %d after it settled", goroutinesBefore, after)
	}
}

// soakLeftover says what the soak left that it should not have, or nil.
func soakLeftover(a *nomadtest.Agent) error {
	var errs []error
	claims, _, err := a.Client.Variables().PrefixList("agentkernel-pool/"+soakPool+"/claims/", nil)
	if err != nil {
		return err
	}
	if len(claims) > 0 {
		errs = append(errs, fmt.Errorf("%d claim records left, first %s", len(claims), claims[0].Path))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	n, err := a.Node(ctx)
	if err != nil {
		return err
	}
	target, _ := strconv.Atoi(n.Attributes[nodeattr.Pool(soakPool, nodeattr.Target)])
	live, warm := map[string]bool{}, 0
	allocs, _, err := a.Client.Allocations().List((&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return err
	}
	for _, al := range allocs {
		if strings.HasPrefix(al.JobID, "agentkernel-pool-") && al.ClientStatus == api.AllocClientStatusRunning {
			live[al.ID] = true
			warm++
		}
		if !strings.HasPrefix(al.JobID, "agentkernel-pool-") && al.ClientStatus != api.AllocClientStatusComplete &&
			al.ClientStatus != api.AllocClientStatusFailed {
			errs = append(errs, fmt.Errorf("sandbox job %s left %s", al.JobID, al.ClientStatus))
		}
	}
	if warm > target {
		errs = append(errs, fmt.Errorf("%d warm sandboxes running, target %d", warm, target))
	}
	for _, cmd := range []string{shipper.ShipCommand, shipper.HoldCommand} {
		if pids := helpers(a, cmd); len(pids) > 0 {
			errs = append(errs, fmt.Errorf("%s helpers left: %v", cmd, pids))
		}
	}
	if procs := soakProcesses(a, live); len(procs) > 0 {
		errs = append(errs, fmt.Errorf("processes of runs or launch sessions of gone sandboxes left: %s", strings.Join(procs, "; ")))
	}
	return errors.Join(errs...)
}

// soakProcesses lists this agent's processes that belong to a run (they
// carry the sandbox's alloc dir for Reap) or to a launch session of a
// sandbox that is not running any more.
func soakProcesses(a *nomadtest.Agent, live map[string]bool) []string {
	var out []string
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		env, err := os.ReadFile(d + "/environ")
		if err != nil {
			continue
		}
		id := envValue(env, "NOMAD_ALLOC_ID")
		mine := bytes.Contains(env, []byte(a.DataDir+"/")) || (id != "" && dirExists(filepath.Join(a.DataDir, "alloc", id)))
		if !mine {
			continue
		}
		cl, _ := os.ReadFile(d + "/cmdline")
		run := envValue(env, "AGENTKERNEL_SANDBOX_ALLOC_DIR") != ""
		session := bytes.Contains(cl, []byte("akp-session")) && !live[id]
		if run || session {
			out = append(out, fmt.Sprintf("pid %s %q", filepath.Base(d), bytes.ReplaceAll(cl, []byte{0}, []byte{' '})))
		}
	}
	return out
}

func envValue(env []byte, key string) string {
	for _, kv := range bytes.Split(env, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, []byte(key+"=")); ok {
			return string(v)
		}
	}
	return ""
}

func dirExists(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}
