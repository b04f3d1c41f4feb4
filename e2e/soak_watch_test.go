package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/nomad/api"

	"github.com/agentkernel/agentkernel-pool/driver"
	"github.com/agentkernel/agentkernel-pool/driver/shipper"
	"github.com/agentkernel/agentkernel-pool/internal/nodeattr"
	"github.com/agentkernel/agentkernel-pool/internal/nomadtest"
)

// soakWatch follows one soak task from the outside: the allocation through
// blocking queries, and its run's exit record in the claimed sandbox on the
// host, which says when its command exited.
type soakWatch struct {
	a          *nomadtest.Agent
	job, alloc string
	registered time.Time
	sandbox    string    // the claimed sandbox's alloc id, once an event names it
	runDir     string    // the run's dir in the sandbox, once found
	exitAt     time.Time // the exit record's time
	stopAt     time.Time // when the test stopped the job
	killAt     time.Time // the task's Killing event: Nomad asked the driver to stop it
	took       time.Duration
	dumped     string
}

var soakSandboxRe = regexp.MustCompile(`(?:^Claimed warm sandbox (\S+) from|^Pool \S+ miss: .* for (\S+)$)`)

// untilDead waits until the task is dead. With stop, it stops the job once
// the command is up. What it times is the plugin's part: from the command's
// exit (its exit record in the sandbox) to the exit's report (the task's
// Terminated event, when WaitTask answered), and from Nomad's asking the
// driver to stop the task (the Killing event) to the command's exit. It
// returns an error when either took longer than soakBound (soakStartBound
// from the registration while neither is seen), after it dumped what the
// plugin and the host know of the task and waited a while longer for its end.
func (w *soakWatch) untilDead(ctx context.Context, stop bool) (*api.TaskState, error) {
	var index uint64
	var hang error
	var giveUp time.Time
	for {
		q := (&api.QueryOptions{WaitIndex: index, WaitTime: time.Second}).WithContext(ctx)
		al, meta, err := w.a.Client.Allocations().Info(w.alloc, q)
		if err != nil {
			if ctx.Err() != nil {
				return nil, fmt.Errorf("read alloc: %w (%v)", err, hang)
			}
			time.Sleep(time.Second)
			continue
		}
		index = meta.LastIndex
		ts := al.TaskStates["agent"]
		w.look(ts)
		if ts != nil && ts.State == "dead" {
			if at := eventAt(ts, api.TaskTerminated); !at.IsZero() && !w.exitAt.IsZero() {
				w.took = at.Sub(w.exitAt)
			}
			return ts, hang
		}
		now := time.Now()
		if stop && w.stopAt.IsZero() && w.up() {
			if _, _, err := w.a.Client.Jobs().Deregister(w.job, false, (&api.WriteOptions{}).WithContext(ctx)); err == nil {
				w.stopAt = time.Now()
			}
		}
		var bound time.Time
		switch {
		case !eventAt(ts, api.TaskTerminated).IsZero():
			bound = now.Add(time.Hour) // reported: Nomad's to finish
		case !w.exitAt.IsZero():
			bound = w.exitAt.Add(soakBound)
		case !w.killAt.IsZero():
			bound = w.killAt.Add(soakKillTimeout + soakBound)
		default:
			bound = w.registered.Add(soakStartBound)
		}
		switch {
		case hang == nil && now.After(bound):
			hang = fmt.Errorf("not reported %s after %s (sandbox %s, run dir %q)", now.Sub(w.since()).Round(time.Second), w.what(), w.sandbox, w.runDir)
			w.dumped = w.dumpNow(ts)
			giveUp = now.Add(90 * time.Second) // the watchdog's bound and then some
		case hang != nil && now.After(giveUp):
			return ts, hang
		}
	}
}

// eventAt is the time of the task's last event of type typ, or zero.
func eventAt(ts *api.TaskState, typ string) time.Time {
	if ts == nil {
		return time.Time{}
	}
	for i := len(ts.Events) - 1; i >= 0; i-- {
		if ts.Events[i].Type == typ {
			return time.Unix(0, ts.Events[i].Time)
		}
	}
	return time.Time{}
}

func (w *soakWatch) since() time.Time {
	switch {
	case !w.exitAt.IsZero():
		return w.exitAt
	case !w.killAt.IsZero():
		return w.killAt
	}
	return w.registered
}

func (w *soakWatch) what() string {
	switch {
	case !w.exitAt.IsZero():
		return "its command's exit"
	case !w.killAt.IsZero():
		return "Nomad's kill"
	}
	return "its registration (no exit record seen)"
}

// look finds the claimed sandbox from the task's events, the run's dir in it
// and the run's exit record.
func (w *soakWatch) look(ts *api.TaskState) {
	if ts == nil {
		return
	}
	if w.killAt.IsZero() {
		w.killAt = eventAt(ts, api.TaskKilling)
	}
	if w.sandbox == "" {
		for _, e := range ts.Events {
			if m := soakSandboxRe.FindStringSubmatch(cmp(e.DriverMessage, e.DisplayMessage)); m != nil {
				short := cmp(m[1], m[2])
				if found, _ := filepath.Glob(filepath.Join(w.a.DataDir, "alloc", short+"*")); len(found) == 1 {
					w.sandbox = filepath.Base(found[0])
				}
			}
		}
	}
	if w.sandbox != "" && w.runDir == "" {
		runs, _ := filepath.Glob(filepath.Join(w.a.DataDir, "alloc", w.sandbox, "alloc", ".agentkernel", w.alloc[:8]+"-*"))
		if len(runs) == 1 {
			w.runDir = runs[0]
		}
	}
	if w.runDir != "" && w.exitAt.IsZero() {
		if fi, err := os.Stat(filepath.Join(w.runDir, "exit")); err == nil {
			w.exitAt = fi.ModTime()
		}
	}
}

// up says the stopped kind's command has printed its first line.
func (w *soakWatch) up() bool {
	b, err := os.ReadFile(logPath(w.a, w.alloc, "agent"))
	return err == nil && bytes.Contains(b, []byte("up n="))
}

// dumpNow is what the plugin knows of the task (its "task state" line, on
// SIGUSR1) and what the host shows: the run's files, its helpers, the events.
func (w *soakWatch) dumpNow(ts *api.TaskState) string {
	var b strings.Builder
	fmt.Fprintf(&b, "plugin: %s\n", pluginTaskState(w.a, w.alloc))
	if w.runDir != "" {
		entries, _ := os.ReadDir(w.runDir)
		for _, e := range entries {
			fmt.Fprintf(&b, "run file %s", e.Name())
			if info, err := e.Info(); err == nil {
				fmt.Fprintf(&b, " (%d bytes, %s)", info.Size(), info.ModTime().Format(time.StampMicro))
				if info.Size() < 200 && e.Name() != "stdout" && e.Name() != "stderr" && e.Name() != "argv" {
					c, _ := os.ReadFile(filepath.Join(w.runDir, e.Name()))
					fmt.Fprintf(&b, ": %q", c)
				}
			}
			b.WriteString("\n")
		}
	}
	for _, cmd := range []string{shipper.ShipCommand, shipper.HoldCommand} {
		for _, pid := range helpers(w.a, cmd) {
			if cl, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); bytes.Contains(cl, []byte(w.alloc)) {
				fmt.Fprintf(&b, "%s pid %d alive\n", cmd, pid)
			}
		}
	}
	if ts != nil {
		b.WriteString("events:\n" + events(ts))
	}
	return b.String()
}

var dumpMu sync.Mutex

// pluginTaskState asks the plugin for its state (SIGUSR1: Driver.LogState)
// and returns its log lines about allocID.
func pluginTaskState(a *nomadtest.Agent, allocID string) string {
	dumpMu.Lock()
	defer dumpMu.Unlock()
	lines := pluginDump(a)
	var out []string
	for _, l := range lines {
		if strings.Contains(l, allocID) {
			out = append(out, l)
		}
	}
	if len(out) == 0 {
		return "no task state line for alloc " + allocID
	}
	return strings.Join(out, "\n")
}

// pluginDump signals the plugin and returns the log lines of its state dump.
func pluginDump(a *nomadtest.Agent) []string {
	mark := strings.Count(a.Log(), "plugin state:")
	for _, pid := range a.Processes(driver.Name) {
		_ = syscall.Kill(pid, syscall.SIGUSR1)
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		log := a.Log()
		if strings.Count(log, "plugin state:") > mark {
			time.Sleep(200 * time.Millisecond) // the task lines follow
			log = a.Log()
			i := nthIndex(log, "plugin state:", mark)
			start := strings.LastIndexByte(log[:i], '\n') + 1
			var out []string
			for _, l := range strings.Split(log[start:], "\n") {
				if strings.Contains(l, "plugin state:") || strings.Contains(l, "task state:") {
					out = append(out, l)
				}
			}
			return out
		}
		time.Sleep(100 * time.Millisecond)
	}
	return nil
}

// nthIndex is the index of the n-th (from 0) occurrence of sub in s.
func nthIndex(s, sub string, n int) int {
	at := 0
	for ; n >= 0; n-- {
		i := strings.Index(s[at:], sub)
		if i < 0 {
			return -1
		}
		at += i + len(sub)
	}
	return at - len(sub)
}

// soakWaitWarm waits until the pool has its size warm: up to 5 minutes,
// since exec sandboxes build a chroot each (about 10 s alone, minutes on a
// loaded machine).
func soakWaitWarm(t *testing.T, a *nomadtest.Agent) {
	t.Helper()
	key := nodeattr.Pool(soakPool, nodeattr.Warm)
	var got string
	for deadline := time.Now().Add(5 * time.Minute); time.Now().Before(deadline); time.Sleep(time.Second) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		n, err := a.Node(ctx)
		cancel()
		if err == nil {
			if got = n.Attributes[key]; got == strconv.Itoa(soakSize) {
				return
			}
		}
	}
	t.Fatalf("%s = %q after 5 minutes, want %d", key, got, soakSize)
}

var goroutinesRe = regexp.MustCompile(`plugin state: .*goroutines=(\d+)`)

// pluginGoroutines is the plugin's goroutine count, from its state dump.
func pluginGoroutines(t *testing.T, a *nomadtest.Agent) int {
	t.Helper()
	for _, l := range pluginDump(a) {
		if m := goroutinesRe.FindStringSubmatch(l); m != nil {
			n, _ := strconv.Atoi(m[1])
			return n
		}
	}
	t.Fatalf("no plugin state in the agent log after SIGUSR1")
	return 0
}
