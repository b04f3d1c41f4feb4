package e2e

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/nomad/api"

	"github.com/agentkernel/agentkernel-pool/driver/nsmount"
	"github.com/agentkernel/agentkernel-pool/internal/nomadtest"
)

// e2eImage is the local image the docker tests run: static busybox, built
// here from the busybox-static package (no registry is needed).
const e2eImage = "local/agentkernel-pool-e2e:1"

// dockerPluginConfig lets Nomad's docker driver run the runtimes the tests
// use (runsc-host: gVisor with host networking, dockerHostGVisor), and keeps
// it from deleting the local image once no task uses it (its image GC would,
// and with no registry the next task could not start).
const dockerPluginConfig = `plugin "docker" {
  config {
    allow_runtimes = ["runc", "runsc", "` + dockerHostGVisor + `"]
    gc {
      image = false
    }
  }
}
`

// dockerHostGVisor is the runtime name the tests expect for gVisor with host
// networking (runsc --network=host), which a server in the sandbox needs to
// be reachable from the host: the default runsc here runs with
// --network=none, as its own netstack refuses the root network namespace.
const dockerHostGVisor = "runsc-host"

// dockerReady reports why docker tests cannot run here, or "".
func dockerReady() string {
	runtimes, err := dockerRuntimes()
	if err != nil {
		return "no docker daemon answers on /var/run/docker.sock (start dockerd; example/pools/docker-gvisor.nomad.hcl says how): " + err.Error()
	}
	if !runtimes["runsc"] {
		return "dockerd has no runsc runtime (register /usr/bin/runsc in /etc/docker/daemon.json; example/pools/docker-gvisor.nomad.hcl says how)"
	}
	if _, err := os.Stat("/bin/busybox"); err != nil {
		return "no /bin/busybox to build the test image from (apt-get install busybox-static)"
	}
	return ""
}

// dockerRuntimes is the set of runtimes dockerd has registered (GET /info).
func dockerRuntimes() (map[string]bool, error) {
	c := http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", "/var/run/docker.sock")
		}}}
	defer c.CloseIdleConnections()
	resp, err := c.Get("http://docker/info")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var info struct{ Runtimes map[string]json.RawMessage }
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&info); err != nil {
		return nil, fmt.Errorf("decode docker info: %w", err)
	}
	set := map[string]bool{}
	for name := range info.Runtimes {
		set[name] = true
	}
	return set, nil
}

// dockerLacks reports why dockerd cannot run runtime, or "".
func dockerLacks(runtime string) string {
	runtimes, err := dockerRuntimes()
	switch {
	case err != nil:
		return "docker info: " + err.Error()
	case runtimes[runtime]:
		return ""
	case runtime == dockerHostGVisor:
		return "dockerd has no runtime " + runtime + ` (gVisor with host networking: add "` + runtime +
			`": {"path": "/usr/bin/runsc", "runtimeArgs": ["--network=host"]} to "runtimes" in /etc/docker/daemon.json and send dockerd SIGHUP; README, Development)`
	}
	return "dockerd has no runtime " + runtime
}

var imageOnce sync.Once
var imageErr error

// ensureImage imports e2eImage from /bin/busybox, once per test binary.
func ensureImage(t testing.TB) {
	t.Helper()
	imageOnce.Do(func() {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		bb, err := os.ReadFile("/bin/busybox")
		if err != nil {
			imageErr = err
			return
		}
		add := func(h *tar.Header, body []byte) {
			h.ModTime = time.Unix(0, 0)
			_ = tw.WriteHeader(h)
			_, _ = tw.Write(body)
		}
		for _, d := range []string{"bin", "usr", "usr/bin", "etc", "tmp", "proc", "sys", "dev", "alloc", "local", "secrets"} {
			mode := int64(0o755)
			if d == "tmp" {
				mode = 0o1777
			}
			add(&tar.Header{Name: d + "/", Typeflag: tar.TypeDir, Mode: mode}, nil)
		}
		add(&tar.Header{Name: "bin/busybox", Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(bb))}, bb)
		out, err := exec.Command("/bin/busybox", "--list").Output()
		if err != nil {
			imageErr = err
			return
		}
		for _, applet := range strings.Fields(string(out)) {
			if applet != "busybox" {
				add(&tar.Header{Name: "bin/" + applet, Typeflag: tar.TypeSymlink, Linkname: "busybox"}, nil)
			}
		}
		add(&tar.Header{Name: "usr/bin/setsid", Typeflag: tar.TypeSymlink, Linkname: "/bin/setsid"}, nil)
		passwd := []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
		add(&tar.Header{Name: "etc/passwd", Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(passwd))}, passwd)
		group := []byte("root:x:0:\nnogroup:x:65534:\n")
		add(&tar.Header{Name: "etc/group", Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(group))}, group)
		_ = tw.Close()
		cmd := exec.Command("docker", "import", "-c", "ENV PATH=/usr/bin:/bin", "-", e2eImage)
		cmd.Stdin = &buf
		if out, err := cmd.CombinedOutput(); err != nil {
			imageErr = &importError{err: err, out: string(out)}
		}
	})
	if imageErr != nil {
		t.Fatalf("build %s: %v", e2eImage, imageErr)
	}
}

type importError struct {
	err error
	out string
}

func (e *importError) Error() string { return e.err.Error() + ": " + e.out }

// dockerTemplate is example/pools/docker-gvisor.nomad.hcl on the given
// runtime with the test image, in a temp file. With user set, its task runs as
// that user with no_new_privs (and, as in the example, no capabilities): a
// sandbox the host sees as unprivileged, which gets alloc/data by a mount.
func dockerTemplate(t testing.TB, runtime, user string) string {
	t.Helper()
	b, err := os.ReadFile("../example/pools/docker-gvisor.nomad.hcl")
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for _, want := range []string{`runtime      = "runsc"`, `image        = "local/busybox:1"`, `driver = "docker"`, `cap_drop        = ["all"]`} {
		if !strings.Contains(s, want) {
			t.Fatalf("example/pools/docker-gvisor.nomad.hcl changed shape: no %s", want)
		}
	}
	s = strings.Replace(s, `runtime      = "runsc"`, `runtime      = "`+runtime+`"`, 1)
	s = strings.Replace(s, `image        = "local/busybox:1"`, `image        = "`+e2eImage+`"`, 1)
	if user != "" {
		s = strings.Replace(s, `driver = "docker"`, `driver = "docker"`+"\n      user   = "+hclString(user), 1)
		s = strings.Replace(s, `cap_drop        = ["all"]`, `cap_drop        = ["all"]`+"\n        security_opt    = [\"no-new-privileges\"]", 1)
	}
	p := filepath.Join(t.TempDir(), runtime+user+".nomad.hcl")
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// dockerAgent starts an agent with a warm pool "box" of the docker template on
// runtime (as user, if set: see dockerTemplate), and waits until it has size
// warm allocations.
func dockerAgent(t testing.TB, runtime, user string, size, max int, persistent bool) *nomadtest.Agent {
	t.Helper()
	if _, err := nomadtest.Binary(); err != nil {
		t.Skipf("skipping e2e: %v", err)
	}
	if why := dockerReady(); why != "" {
		t.Skipf("skipping docker e2e: %s", why)
	}
	ensureImage(t)
	a := nomadtest.Start(t, nomadtest.Options{PluginDir: nomadtest.BuildPlugin(t), Persistent: persistent,
		PluginConfig: poolBlock("box", dockerTemplate(t, runtime, user), size, max), ExtraConfig: dockerPluginConfig})
	waitWarm(t, a, "box", size)
	return a
}

// TestDockerPools: on docker pools (runc and gVisor's runsc, and runc with an
// unprivileged user) the pool fills, a sandbox task claims a warm sandbox and
// runs in it (under runsc, in gVisor's kernel) with its output, its env and
// its exit code; an idle sandbox task answers nomad alloc exec with stdin, a
// tty and exit codes; a drop-in job gets its files by the way the sandbox
// allows; and a command survives the plugin being killed with all its output.
func TestDockerPools(t *testing.T) {
	for _, tc := range []struct{ name, runtime, user, way string }{
		// Drop-in: gVisor's processes are not the host's, so everything is
		// copied; under runc as root a mount would leave root's files on
		// the host (nsmount.ErrPrivileged), so it is copied too; under runc
		// as nobody with no_new_privs alloc/data is mounted.
		{"runsc", "runsc", "", "(alloc/data copied: " + nsmount.ErrNotFound.Error()},
		{"runc", "runc", "", "(alloc/data copied: " + nsmount.ErrPrivileged.Error()},
		{"runc-nobody", "runc", "nobody", "Mounted alloc/data into sandbox"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			runtime := tc.runtime
			a := dockerAgent(t, runtime, tc.user, 2, 6, false)

			alloc := runJob(t, a, commandJob(t, "e2e-box", "box", `uname -r; echo out:$GREETING; echo err:$GREETING >&2; exit 3`))
			ts := waitTask(t, a, alloc.ID, "agent", "dead", 90*time.Second)
			if code, _ := exitCode(ts); code != 3 {
				t.Errorf("exit code %d, want 3; events:\n%s", code, events(ts))
			}
			if !strings.Contains(events(ts), "Claimed warm sandbox") {
				t.Errorf("no warm claim:\n%s", events(ts))
			}
			out := logs(t, a, alloc.ID, "agent")
			if !strings.Contains(out, "out:hello from the task env") {
				t.Errorf("stdout %q lacks the command's output with the task env", out)
			}
			if gvisor := strings.Contains(out, "4.4.0"); gvisor != (runtime == "runsc") {
				t.Errorf("stdout %q: uname -r says gVisor=%v, want %v", out, gvisor, runtime == "runsc")
			}
			if stderr, _, _ := nomadCLI(t, a, "", "alloc", "logs", "-stderr", alloc.ID, "agent"); !strings.Contains(stderr, "err:hello") {
				t.Errorf("stderr %q", stderr)
			}

			idle := runJob(t, a, strings.Replace(jobHCL(t, "idle.nomad.hcl"), `pool = "dev"`, `pool = "box"`, 1))
			waitTask(t, a, idle.ID, "agent", "running", 90*time.Second)
			out, errOut, code := nomadCLI(t, a, "line one\n", "alloc", "exec", "-i", "-t=false", "-task", "agent", idle.ID,
				"/bin/sh", "-c", "cat; echo secret=$SECRET; uname -r; exit 42")
			if code != 42 || !strings.Contains(out, "line one") || !strings.Contains(out, "secret=per-task-secret") {
				t.Errorf("exec: code %d stdout %q stderr %q", code, out, errOut)
			}
			// It lingers after printing: under gVisor the output of a
			// process that exits at once can be lost on a tty.
			sizes := make(chan api.TerminalSize, 1)
			sizes <- api.TerminalSize{Height: 33, Width: 101}
			var ttyOut bytes.Buffer
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			stdin, stdinW := io.Pipe()
			defer stdinW.Close()
			code, err := a.Client.Allocations().Exec(ctx, idle, "agent", true, []string{"/bin/sh", "-c", "sleep 0.5; test -t 0 && stty size; sleep 0.5"},
				stdin, &ttyOut, &ttyOut, sizes, nil)
			if err != nil || code != 0 || !strings.Contains(ttyOut.String(), "33 101") {
				t.Errorf("tty exec: code %d err %v out %q; want a terminal sized 33x101", code, err, ttyOut.String())
			}
			if _, errOut, code := nomadCLI(t, a, "", "job", "stop", "-purge", "e2e-idle"); code != 0 {
				t.Fatalf("job stop: %s", errOut)
			}

			waitWarm(t, a, "box", 2)
			dropIn(t, a, tc.way, true)

			// The plugin killed mid-task: the command lives on in its
			// sandbox, and all its output and its exit code arrive.
			waitWarm(t, a, "box", 2)
			long := runJob(t, a, commandJob(t, "e2e-box-long", "box", `echo before; while [ ! -e /alloc/release ]; do sleep 0.1; done; echo after; exit 5`))
			waitTask(t, a, long.ID, "agent", "running", 90*time.Second)
			waitFor(t, 60*time.Second, "first output", func() bool { return strings.Contains(logs(t, a, long.ID, "agent"), "before") })
			for _, pid := range pluginPIDs(t, a) {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
			waitFor(t, 60*time.Second, "a new plugin process", func() bool { return len(pluginPIDs(t, a)) > 0 })
			releaseSandbox(t, a, long.ID, "release")
			ts = waitTask(t, a, long.ID, "agent", "dead", 90*time.Second)
			if code, _ := exitCode(ts); code != 5 {
				t.Errorf("exit code %d after the plugin kill, want 5; events:\n%s", code, events(ts))
			}
			if out := logs(t, a, long.ID, "agent"); strings.Count(out, "before") != 1 || !strings.Contains(out, "after") {
				t.Errorf("output %q: want 'before' once and 'after'", out)
			}
		})
	}
}

// releaseSandbox creates a file in the shared alloc dir of the sandbox that
// the task of allocID claimed, where a command waiting for it sees it.
func releaseSandbox(t testing.TB, a *nomadtest.Agent, allocID, name string) {
	t.Helper()
	runs, _ := filepath.Glob(filepath.Join(a.DataDir, "alloc", "*", "alloc", ".agentkernel", allocID[:8]+"-*"))
	if len(runs) != 1 {
		t.Fatalf("run dirs of %s: %v, want one", allocID, runs)
	}
	if err := os.WriteFile(filepath.Join(filepath.Dir(filepath.Dir(runs[0])), name), nil, 0o644); err != nil {
		t.Fatal(err)
	}
}
