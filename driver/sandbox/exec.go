package sandbox

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"path"
	"strconv"
	"time"

	"github.com/hashicorp/nomad/api"

	"github.com/agentkernel/agentkernel-pool/internal/untrusted"
)

// Exec runs cmd in the sandbox with the run's env, like nomad alloc exec: stdin
// and its close, tty and resizes, stdout and stderr, and the exit code. When ctx
// ends first, the remote process is hung up on (SIGHUP, then SIGKILL), since
// Nomad lets it run on after the session closes, and ctx's error is returned.
func (r *Runner) Exec(ctx context.Context, ref Ref, runID string, cmd []string, tty bool,
	stdin io.Reader, stdout, stderr io.Writer, resize <-chan api.TerminalSize) (int, error) {
	if err := checkRunID(runID); err != nil {
		return -1, fmt.Errorf("exec in allocation %s: %w", ref.short(), err)
	}
	if len(cmd) == 0 {
		return -1, fmt.Errorf("exec in allocation %s: empty command", ref.short())
	}
	if stdin == nil {
		stdin = bytes.NewReader(nil)
	}
	execID := newExecID()
	pidPath := path.Join(runRel(runID), "exec-"+execID+".pid")
	defer func() {
		if err := ref.files().Remove(pidPath); err != nil {
			r.logger().Warn("could not remove an exec's pid file", "alloc_id", ref.AllocID, "error", err)
		}
	}()

	full := append([]string{"/bin/sh", "-c", execScript, "akp-exec", runID, execID}, cmd...)
	code, err := r.execAs(ctx, OpExecSession, ref, tty, full, stdin, stdout, stderr, resize)
	if err != nil && ctx.Err() != nil {
		r.hangup(ref, pidPath)
		return -1, fmt.Errorf("exec %q in allocation %s: %w", cmd[0], ref.short(), ctx.Err())
	}
	if err != nil {
		return -1, fmt.Errorf("exec %q in allocation %s: %w", cmd[0], ref.short(), err)
	}
	return code, nil
}

// hangup ends an exec'd process whose client went away. The process records its
// pid as it starts; give it a moment if the cancel came first.
func (r *Runner) hangup(ref Ref, pidPath string) {
	var pid string
	for i := 0; i < 20; i++ {
		fields, ok, err := readRecord(ref.files(), pidPath)
		if err != nil {
			r.logger().Warn("exec session cancelled and its pid record unreadable; its process may run on", "alloc_id", ref.AllocID, "error", err)
			return
		}
		if ok {
			pid = fields[0]
			break
		}
		time.Sleep(execPidPollEvery)
	}
	if _, err := strconv.Atoi(pid); err != nil {
		r.logger().Warn("exec session cancelled before its process recorded a pid; it may run on", "alloc_id", ref.AllocID)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), orDefault(r.CallTimeout, DefaultCallTimeout)+hangupGrace)
	defer cancel()
	var stderr untrusted.Buffer // the sandbox's shell prints what it likes
	code, err := r.call(ctx, ref, false, []string{"/bin/sh", "-c", hangupScript, "akp-hangup", pid},
		bytes.NewReader(nil), io.Discard, &stderr, nil)
	if err != nil || code != 0 {
		r.logger().Warn("could not end exec'd process after its session was cancelled", "alloc_id", ref.AllocID,
			"pid", pid, "exit_code", code, "stderr", stderr.Quoted(), "error", err)
	}
}

func newExecID() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
