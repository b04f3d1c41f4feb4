package e2e

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/nomad/api"

	"github.com/agentkernel/agentkernel-pool/driver"
	"github.com/agentkernel/agentkernel-pool/internal/nomadtest"
)

// forwarder is a TCP forwarder on a fixed loopback port that the test opens and
// closes: the plugin reaches the Nomad API only through it, so closing it is
// "the API is down" for the plugin alone (the agent itself keeps running).
type forwarder struct {
	addr string // 127.0.0.1:<port>

	tlsConf *tls.Config // non-nil: terminate TLS (see TestTLS)

	mu     sync.Mutex
	target string
	ln     net.Listener
	conns  map[net.Conn]struct{}
}

func newForwarder(t *testing.T) *forwarder {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &forwarder{addr: l.Addr().String(), conns: map[net.Conn]struct{}{}}
	l.Close()
	t.Cleanup(f.close)
	return f
}

func (f *forwarder) url() string { return "http://" + f.addr }

// open starts forwarding to target (host:port).
func (f *forwarder) open(t *testing.T, target string) {
	t.Helper()
	var ln net.Listener
	var err error
	for i := 0; i < 50; i++ { // the port may linger briefly after close
		if ln, err = net.Listen("tcp", f.addr); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("forwarder listen %s: %v", f.addr, err)
	}
	if f.tlsConf != nil {
		ln = tls.NewListener(ln, f.tlsConf)
	}
	f.mu.Lock()
	f.ln, f.target = ln, target
	f.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go f.serve(c, target)
		}
	}()
}

func (f *forwarder) serve(c net.Conn, target string) {
	up, err := net.Dial("tcp", target)
	if err != nil {
		c.Close()
		return
	}
	f.mu.Lock()
	if f.ln == nil { // closed meanwhile
		f.mu.Unlock()
		c.Close()
		up.Close()
		return
	}
	f.conns[c], f.conns[up] = struct{}{}, struct{}{}
	f.mu.Unlock()
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(up, c); done <- struct{}{} }()
	go func() { _, _ = io.Copy(c, up); done <- struct{}{} }()
	<-done
	c.Close()
	up.Close()
	f.mu.Lock()
	delete(f.conns, c)
	delete(f.conns, up)
	f.mu.Unlock()
}

// close stops listening and cuts every forwarded connection (blocking queries too).
func (f *forwarder) close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.ln != nil {
		f.ln.Close()
		f.ln = nil
	}
	for c := range f.conns {
		c.Close()
	}
	f.conns = map[net.Conn]struct{}{}
}

func faultJob(t testing.TB, name string, attempts int, script string) string {
	return jobHCL(t, "fault.nomad.hcl", "JOBNAME", name, "ATTEMPTS", itoa(attempts), "SCRIPT", script)
}

// sandboxOf finds the claimed sandbox allocation in the task's claim event.
func sandboxOf(ts *api.TaskState) string {
	for i := len(ts.Events) - 1; i >= 0; i-- {
		msg := ts.Events[i].DisplayMessage
		if id := ts.Events[i].Details["sandbox_alloc_id"]; id != "" && (strings.Contains(msg, "Claimed warm sandbox") || strings.Contains(msg, "miss:")) {
			return id
		}
	}
	return ""
}

func taskState(t *testing.T, a *nomadtest.Agent, allocID, task string) *api.TaskState {
	t.Helper()
	al, _, err := a.Client.Allocations().Info(allocID, nil)
	if err != nil || al.TaskStates[task] == nil {
		return &api.TaskState{}
	}
	return al.TaskStates[task]
}

// claimVars lists the pool's claim records left in Nomad.
func claimVars(t *testing.T, a *nomadtest.Agent, pool string) []string {
	t.Helper()
	vars, _, err := a.Client.Variables().PrefixList("agentkernel-pool/"+pool+"/claims/", nil)
	if err != nil {
		t.Fatalf("list claim variables: %v", err)
	}
	var out []string
	for _, v := range vars {
		out = append(out, v.Path)
	}
	return out
}

// TestNomadFaults: the plugin reaches the Nomad API through a forwarder the test
// opens and closes.
//   - API down when the plugin starts: unhealthy, naming the API; healthy once it
//     answers, with the same plugin process (no restart).
//   - API down during a claim: the start fails recoverably and succeeds on Nomad's
//     restart once the API is back.
//   - The claimed sandbox allocation stopped from outside: the task fails with a
//     message that says so.
//   - Afterwards, with the jobs purged: no claim record and no warm job beyond the
//     pool's size.
func TestNomadFaults(t *testing.T) {
	if _, err := nomadtest.Binary(); err != nil {
		t.Skipf("skipping e2e: %v", err)
	}
	fwd := newForwarder(t)
	block := strings.Replace(poolBlock("dev", rawExecTemplate(t), 1, 4), "config {\n",
		"config {\n  address = \""+fwd.url()+"\"\n", 1)
	a := nomadtest.Start(t, nomadtest.Options{PluginDir: nomadtest.BuildPlugin(t), PluginConfig: block})
	target := strings.TrimPrefix(a.Addr, "http://")

	t.Run("api down at start", func(t *testing.T) {
		begin := time.Now()
		d := unhealthyWith(t, a, 60*time.Second, "nomad api at "+fwd.url(), "connection refused")
		t.Logf("while the API is down (%s): %s", time.Since(begin).Round(time.Millisecond), d.HealthDescription)
		// Still unhealthy a little later: it does not give up or pretend.
		time.Sleep(3 * time.Second)
		unhealthyWith(t, a, 5*time.Second, "nomad api at "+fwd.url())
		pids := pluginPIDs(t, a)
		if len(pids) == 0 {
			t.Fatal("no plugin process")
		}
		fwd.open(t, target)
		begin = time.Now()
		if d, ok := a.WaitDriver(driver.Name, 60*time.Second, func(d *api.DriverInfo) bool { return d.Healthy }); !ok {
			t.Fatalf("driver not healthy after the API came back: %+v", d)
		}
		t.Logf("healthy %s after the API came back", time.Since(begin).Round(time.Millisecond))
		waitWarm(t, a, "dev", 1)
		if now := pluginPIDs(t, a); fmt.Sprint(now) != fmt.Sprint(pids) {
			t.Errorf("plugin processes %v became %v: the plugin was restarted", pids, now)
		}
	})
	if t.Failed() {
		return
	}

	t.Run("api down during claim", func(t *testing.T) {
		fwd.close()
		alloc := runJob(t, a, faultJob(t, "e2e-fault-claim", 5, "echo claimed-after-outage"))
		waitFor(t, 60*time.Second, "a failed start event", func() bool {
			return strings.Contains(events(taskState(t, a, alloc.ID, "agent")), "No sandbox from pool dev")
		})
		fwd.open(t, target)
		ts := waitTask(t, a, alloc.ID, "agent", "dead", 120*time.Second)
		ev := events(ts)
		if code, ok := exitCode(ts); !ok || code != 0 || ts.Failed {
			t.Errorf("exit code %d (found %v, failed %v), want 0; events:\n%s", code, ok, ts.Failed, ev)
		}
		if !strings.Contains(ev, "Restarting") || !strings.Contains(ev, "Claimed warm sandbox") {
			t.Errorf("want a restart and then a claim; events:\n%s", ev)
		}
		if out := logs(t, a, alloc.ID, "agent"); !strings.Contains(out, "claimed-after-outage") {
			t.Errorf("output %q lacks the command's output", out)
		}
		t.Logf("events:\n%s", ev)
	})

	t.Run("sandbox stopped from outside", func(t *testing.T) {
		waitWarm(t, a, "dev", 1)
		alloc := runJob(t, a, faultJob(t, "e2e-fault-stop", 0, "echo started; sleep 600"))
		waitTask(t, a, alloc.ID, "agent", "running", 60*time.Second)
		waitFor(t, 30*time.Second, "the command's first output", func() bool { return strings.Contains(logs(t, a, alloc.ID, "agent"), "started") })
		ts := taskState(t, a, alloc.ID, "agent")
		sb := sandboxOf(ts)
		if sb == "" {
			t.Fatalf("no claimed sandbox in the events:\n%s", events(ts))
		}
		if _, err := a.Client.Allocations().Stop(&api.Allocation{ID: sb}, nil); err != nil {
			t.Fatalf("stop sandbox allocation %s: %v", sb, err)
		}
		ts = waitTask(t, a, alloc.ID, "agent", "dead", 60*time.Second)
		var msg string
		for _, e := range ts.Events {
			if e.Type == api.TaskTerminated {
				msg = e.DisplayMessage + " " + e.Details["exit_message"]
			}
		}
		if !ts.Failed || !strings.Contains(msg, "stopped from outside") || !strings.Contains(msg, sb[:8]) {
			t.Errorf("task failed=%v, terminated message %q: want a failure saying sandbox %s was stopped from outside; events:\n%s",
				ts.Failed, msg, sb[:8], events(ts))
		}
		t.Logf("terminated: %s", msg)
	})

	t.Run("no leaks", func(t *testing.T) {
		for _, j := range []string{"e2e-fault-claim", "e2e-fault-stop"} {
			if _, _, err := a.Client.Jobs().Deregister(j, true, nil); err != nil {
				t.Errorf("purge %s: %v", j, err)
			}
		}
		begin := time.Now()
		var claims []string
		var warm []*api.JobListStub
		deadline := time.Now().Add(60 * time.Second)
		for time.Now().Before(deadline) {
			claims, warm = claimVars(t, a, "dev"), warmJobs(t, a)
			if len(claims) == 0 && len(warm) <= 1 {
				break
			}
			time.Sleep(500 * time.Millisecond)
		}
		if len(claims) != 0 || len(warm) > 1 {
			var ids []string
			for _, j := range warm {
				ids = append(ids, j.ID+" ("+j.Status+")")
			}
			t.Fatalf("after 60s: claim records %v and live warm jobs %v; want none and at most 1", claims, ids)
		}
		t.Logf("clean %s after the purge (warm jobs %d)", time.Since(begin).Round(time.Millisecond), len(warm))
	})
}
