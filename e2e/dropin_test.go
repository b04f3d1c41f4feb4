package e2e

import (
	"context"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/nomad/api"

	"github.com/agentkernel/agentkernel-pool/driver/nsmount"
	"github.com/agentkernel/agentkernel-pool/internal/nomadtest"
)

// TestDropIn: a parameterized agent job that works under exec runs unchanged
// on a pool: dispatched with a payload and meta, with a template into local/,
// a perms = "600" template into secrets/, a nomadVar template read through its
// workload identity, an artifact from a loopback HTTP server and a prestart
// task writing alloc/data. The command reads them all by relative path and
// writes results into local/ and alloc/data; nomad alloc fs shows the first
// and a poststop task reads the second. On an isolated (exec) pool and on a
// raw_exec one.
func TestDropIn(t *testing.T) {
	for _, tc := range []struct{ name, template, way string }{
		// exec: everything copied in and back; alloc/data too, since Nomad
		// runs an exec task with group root and its default capabilities
		// whatever its user, so a mount would let it leave root's files on
		// the host (nsmount); raw_exec: the task's own dirs, no copy.
		{"exec", "exec.nomad.hcl", "(alloc/data copied: " + nsmount.ErrPrivileged.Error()},
		{"raw_exec", "raw_exec.nomad.hcl", "shares the host's filesystem: the command uses the task's own dirs"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := nomadtest.Binary(); err != nil {
				t.Skipf("skipping e2e: %v", err)
			}
			if tc.name == "exec" && os.Geteuid() != 0 {
				t.Skip("skipping: the exec driver needs root")
			}
			spec, err := filepath.Abs("../example/pools/" + tc.template)
			if err != nil {
				t.Fatal(err)
			}
			a := nomadtest.Start(t, nomadtest.Options{PluginDir: nomadtest.BuildPlugin(t), PluginConfig: poolBlock("box", spec, 1, 4)})
			waitWarm(t, a, "box", 1)
			dropIn(t, a, tc.way, tc.name == "exec")
		})
	}
}

// dropIn runs the drop-in job (see TestDropIn) on the agent's pool "box" and
// checks what its command saw and left; way is in the task event that names
// how the files reached the sandbox, and copiedBack says they come back by copy.
func dropIn(t *testing.T, a *nomadtest.Agent, way string, copiedBack bool) {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("echo artifact-ran\n"))
	}))
	defer srv.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, _, err := a.Client.Variables().Create(&api.Variable{Path: "nomad/jobs/e2e-dropin", Items: api.VariableItems{"value": "from-a-variable"}},
		(&api.WriteOptions{}).WithContext(ctx)); err != nil {
		t.Fatal(err)
	}
	hcl := strings.NewReplacer("ARTIFACT_URL", srv.URL+"/tool.sh", "POOL", "box").Replace(jobHCL(t, "dropin.nomad.hcl"))
	job, err := a.Client.Jobs().ParseHCLOpts(&api.JobsParseRequest{JobHCL: hcl, Canonicalize: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := a.Client.Jobs().Register(job, (&api.WriteOptions{}).WithContext(ctx)); err != nil {
		t.Fatal(err)
	}
	resp, _, err := a.Client.Jobs().Dispatch("e2e-dropin", map[string]string{"issue": "42"}, []byte("fix the flaky test\n"), "", (&api.WriteOptions{}).WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	var alloc *api.Allocation
	waitFor(t, 60*time.Second, "the dispatched job's allocation", func() bool {
		allocs, _, err := a.Client.Jobs().Allocations(resp.DispatchedJobID, false, nil)
		if err == nil && len(allocs) > 0 {
			alloc, _, err = a.Client.Allocations().Info(allocs[0].ID, nil)
			return err == nil
		}
		return false
	})
	ts := waitTask(t, a, alloc.ID, "upload", "dead", 180*time.Second)
	agent := waitTask(t, a, alloc.ID, "agent", "dead", 10*time.Second)
	if code, _ := exitCode(agent); code != 0 {
		t.Fatalf("agent exit code %d; events:\n%s\nstderr: %s", code, events(agent), stderrOf(t, a, alloc.ID, "agent"))
	}
	out := logs(t, a, alloc.ID, "agent")
	t.Logf("the command's stdout:\n%s\nevents:\n%s", out, events(agent))
	for _, want := range []string{"fix the flaky test", "issue=42", "from-a-variable", "password=hunter2", "-rw-------", "token-ok", "artifact-ran", "cloned-repo"} {
		if !strings.Contains(out, want) {
			t.Errorf("the command did not see %q; stdout:\n%s\nstderr: %s\nevents:\n%s", want, out, stderrOf(t, a, alloc.ID, "agent"), events(agent))
		}
	}
	if !strings.Contains(events(agent), way) || copiedBack && !strings.Contains(events(agent), "Copied results back from sandbox") {
		t.Errorf("no task event names the way the files went (%q):\n%s", way, events(agent))
	}
	// A mount lives in the sandbox's namespace: the task's files do not
	// land in the sandbox's alloc dir on the host (a copy puts them there).
	claimed := sandboxOf(agent)
	if _, err := os.Stat(filepath.Join(a.DataDir, "alloc", claimed, "alloc", "data", "repo")); claimed == "" || strings.HasPrefix(way, "Mounted") && err == nil {
		t.Errorf("the group's alloc/data shows in sandbox %q's alloc dir on the host (%v)", claimed, err)
	}
	got, errOut, code := nomadCLI(t, a, "", "alloc", "fs", alloc.ID, "agent/local/result.txt")
	if code != 0 || strings.TrimSpace(got) != "result-in-local" {
		t.Errorf("nomad alloc fs agent/local/result.txt: %q (%s)", got, errOut)
	}
	if up := logs(t, a, alloc.ID, "upload"); !strings.Contains(up, "uploaded: result-in-data") {
		t.Errorf("the poststop task read %q from alloc/data; events:\n%s", up, events(ts))
	}
}

func stderrOf(t *testing.T, a *nomadtest.Agent, allocID, task string) string {
	t.Helper()
	out, _, _ := nomadCLI(t, a, "", "alloc", "logs", "-stderr", allocID, task)
	return out
}

// TestDropInLiveAndPlanted, on an isolated (exec) pool: a template rendered
// again mid-run (a Nomad Variable updated) is what the command reads when its
// change_signal arrives; a command that plants symlinks to a host file and
// a host dir, a symlink up the tree and a FIFO in local/ leaves symlinks (never
// their targets' content) in the task's local/, and nothing on the host
// changes; and the same command (as nobody, with the capabilities Nomad's
// exec driver gives it), copying /bin/sh into local/ and alloc/data, making
// the copies setuid (one chowned to root) and a setgid dir, leaves none of
// that on the host: no setuid, setgid or root-owned file.
func TestDropInLiveAndPlanted(t *testing.T) {
	hostDir, hostFile, before := hostSecretFile(t)
	a := execPoolAgent(t, "box", 2, 4)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	setVar := func(v string) {
		t.Helper()
		if _, _, err := a.Client.Variables().Update(&api.Variable{Path: "nomad/jobs/e2e-live", Items: api.VariableItems{"value": v}},
			(&api.WriteOptions{}).WithContext(ctx)); err != nil {
			t.Fatal(err)
		}
	}
	setVar("first")
	live := runJob(t, a, strings.Replace(jobHCL(t, "live.nomad.hcl"), "POOL", "box", 1))
	planted := runJob(t, a, commandJob(t, "e2e-planted", "box", `ln -s `+hostFile+` local/to-file; ln -s `+hostDir+` local/to-dir; ln -s ../../../../../.. local/up; mkfifo local/fifo; echo mine > local/mine.txt; `+
		`id; grep -E '^(Uid|Gid|Cap(Prm|Eff|Amb|Bnd)|NoNewPrivs)' /proc/self/status; `+
		`cp /bin/sh local/evil && chmod 4755 local/evil; cp /bin/sh local/rootevil && chown 0:0 local/rootevil; chmod 6755 local/rootevil; `+
		`mkdir local/sg && chmod 2777 local/sg && cp /bin/sh local/sg/evil && chmod 4755 local/sg/evil; `+
		`cp /bin/sh /alloc/data/evil && chmod 4755 /alloc/data/evil; ls -ln local /alloc/data; exit 3`))

	waitTask(t, a, live.ID, "agent", "running", 120*time.Second)
	waitFor(t, 60*time.Second, "the command's first read", func() bool { return strings.Contains(logs(t, a, live.ID, "agent"), "start: first") })
	setVar("second")
	ts := waitTask(t, a, live.ID, "agent", "dead", 60*time.Second)
	if out := logs(t, a, live.ID, "agent"); !strings.Contains(out, "got: second") {
		t.Errorf("after the signal the command read %q, want the template rendered again; events:\n%s", out, events(ts))
	}

	ts = waitTask(t, a, planted.ID, "agent", "dead", 120*time.Second)
	if code, _ := exitCode(ts); code != 3 {
		t.Errorf("exit code %d; events:\n%s", code, events(ts))
	}
	local := filepath.Join(a.DataDir, "alloc", planted.ID, "agent", "local")
	for name, want := range map[string]string{"to-file": hostFile, "to-dir": hostDir, "up": "../../../../../.."} {
		if l, err := os.Readlink(filepath.Join(local, name)); err != nil || l != want {
			t.Errorf("local/%s: %q %v, want a symlink to %q", name, l, err, want)
		}
	}
	if b, err := os.ReadFile(filepath.Join(local, "mine.txt")); err != nil || string(b) != "mine\n" {
		t.Errorf("local/mine.txt: %q %v", b, err)
	}
	if _, err := os.Lstat(filepath.Join(local, "fifo")); err == nil {
		t.Error("a FIFO was copied back")
	}
	if !strings.Contains(events(ts), "special or hard-linked files left out") {
		t.Errorf("no event says the FIFO was left out:\n%s", events(ts))
	}
	_ = filepath.WalkDir(filepath.Join(a.DataDir, "alloc", planted.ID), func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if b, _ := os.ReadFile(p); strings.Contains(string(b), hostSecret) {
				t.Errorf("the host file's content was copied into %s", p)
			}
		}
		return nil
	})
	if after := treeState(t, hostDir); after != before {
		t.Fatalf("the host dir changed:\n%s\nwas\n%s", after, before)
	}

	// The setuid copies of /bin/sh and the setgid dir: the host has them
	// as plain files and dirs of an unprivileged owner.
	t.Logf("the planting command's stdout:\n%s", logs(t, a, planted.ID, "agent"))
	plantedUnprivileged(t, a, planted.ID)
}

// plantedUnprivileged checks what the planting command (the setuid and
// root-owned copies of /bin/sh in local/ and alloc/data, the setgid dir) left
// on the host: plain files and dirs of an unprivileged owner.
func plantedUnprivileged(t *testing.T, a *nomadtest.Agent, allocID string) {
	t.Helper()
	task := filepath.Join(a.DataDir, "alloc", allocID)
	for _, rel := range []string{"agent/local/evil", "agent/local/rootevil", "agent/local/sg", "agent/local/sg/evil", "alloc/data/evil"} {
		var st syscall.Stat_t
		if err := syscall.Lstat(filepath.Join(task, rel), &st); err != nil {
			t.Errorf("%s: %v, want what the command left there", rel, err)
			continue
		}
		if st.Mode&0o7000 != 0 || st.Uid == 0 || st.Gid == 0 {
			t.Errorf("%s on the host: mode %o, owner %d:%d: setuid, setgid, sticky or root's", rel, st.Mode, st.Uid, st.Gid)
		}
	}
}
