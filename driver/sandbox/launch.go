package sandbox

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path"
	"time"

	"github.com/agentkernel/agentkernel-pool/driver/allocfs"
	"github.com/agentkernel/agentkernel-pool/internal/untrusted"
)

// Launch starts s.Command with s.Args and s.Env in the sandbox, detached from
// this process: through the sandbox's launch session when it is primed, else
// in one exec round trip. It returns once the run has started (the session
// answered, or the exec launcher recorded its pid). A run id launched before
// gives ErrAlreadyLaunched and starts nothing. Without a command it only
// writes the run's env for Exec.
func (r *Runner) Launch(ctx context.Context, ref Ref, s Spec) error {
	started, err := r.Start(ctx, ref, s)
	if err != nil {
		return err
	}
	select {
	case err := <-started:
		return err
	case <-ctx.Done():
		return fmt.Errorf("launch command in allocation %s: %w", ref.short(), ctx.Err())
	}
}

// Start is Launch without the wait for a launch session's answer, which is a
// round trip through Nomad into the sandbox (5-10 ms, more under gVisor): it
// returns once the run is requested, and started delivers its outcome, nil
// when it started (at once when there was nothing to wait for). The outcome
// arrives within the launch timeout whatever happens to ctx after Start
// returns; when the session ends without an answer the run is launched by
// exec (at most once: the run's marker), and that outcome is delivered. A
// run requested is followed as any other: its pid record may come after
// Start returns, and Follow and Signal wait for it.
func (r *Runner) Start(ctx context.Context, ref Ref, s Spec) (started <-chan error, err error) {
	if err := checkRunID(s.ID); err != nil {
		return nil, fmt.Errorf("launch command in allocation %s: %w", ref.short(), err)
	}
	env, skipped := envFile(s.Env)
	if len(skipped) > 0 {
		r.logger().Warn("env variables a shell cannot export were left out", "alloc_id", ref.AllocID, "run_id", s.ID, "names", skipped)
	}
	if err := r.makeRunDir(ref, s.ID); err != nil {
		return nil, fmt.Errorf("launch command in allocation %s: %w", ref.short(), err)
	}
	what := "launch command"
	if s.Command == "" {
		what = "prepare run"
	}
	done := make(chan error, 1)
	if sess := r.takeSession(ref.AllocID); sess != nil {
		sent, err := r.sendSession(sess, s, env)
		switch {
		case errors.Is(err, errEnvOnly):
			sess.close()
			done <- nil
			return done, nil
		case err != nil:
			sess.close()
			return nil, fmt.Errorf("%s in allocation %s: run %s: %w", what, ref.short(), s.ID, err)
		case sent:
			// The answer is awaited off the caller's path, bounded by the
			// launch timeout, not by ctx (a request's, which ends first).
			bctx, cancel := withTimeout(context.WithoutCancel(ctx), orDefault(r.LaunchTimeout, DefaultLaunchTimeout))
			r.setLaunch(ref.AllocID, fmt.Sprintf("run %s sent to the launch session at %s; no answer yet", s.ID, time.Now().Format(time.RFC3339Nano)))
			go func() {
				defer cancel()
				defer sess.close()
				defer r.setLaunch(ref.AllocID, "")
				ok, err := r.awaitSession(bctx, sess, s)
				if ok {
					if err != nil {
						err = fmt.Errorf("%s in allocation %s: run %s: %w", what, ref.short(), s.ID, err)
					}
					done <- err
					return
				}
				r.logger().Warn("launch session ended before it answered; launching by exec", "alloc_id", ref.AllocID, "run_id", s.ID)
				r.setLaunch(ref.AllocID, fmt.Sprintf("run %s: the launch session ended without an answer; launching by exec", s.ID))
				done <- r.execLaunch(bctx, ref, s, env, what, true)
			}()
			return done, nil
		}
		sess.close()
	}
	ctx, cancel := withTimeout(ctx, orDefault(r.LaunchTimeout, DefaultLaunchTimeout))
	defer cancel()
	if err := r.execLaunch(ctx, ref, s, env, what, false); err != nil {
		return nil, err
	}
	done <- nil
	return done, nil
}

// setLaunch records what a launch awaiting its outcome is doing ("" once
// the outcome is delivered), for LaunchState.
func (r *Runner) setLaunch(allocID, state string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if state == "" {
		delete(r.launches, allocID)
		return
	}
	if r.launches == nil {
		r.launches = map[string]string{}
	}
	r.launches[allocID] = state
}

// LaunchState says what the launch into the sandbox is doing while its
// outcome has not been delivered (Start's channel); ok is false when no
// launch there awaits one.
func (r *Runner) LaunchState(allocID string) (state string, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	state, ok = r.launches[allocID]
	return state, ok
}

// execLaunch launches the run in one exec round trip. sent says a launch
// session may have taken the run already: its marker then means success,
// once the session's command has recorded its pid.
func (r *Runner) execLaunch(ctx context.Context, ref Ref, s Spec, env []byte, what string, sent bool) error {
	// The launcher prints a pid, or a line saying why not; but the
	// sandbox's shell is the sandbox's, and may print anything.
	stdout, stderr := untrusted.Buffer{Max: 64}, untrusted.Buffer{}
	code, err := r.call(ctx, ref, false, launchCommand(s.ID, s, len(env)), bytes.NewReader(env), &stdout, &stderr, nil)
	if err != nil {
		return fmt.Errorf("%s in allocation %s: %w", what, ref.short(), err)
	}
	msg := &stderr
	switch code {
	case 0:
		if s.Command != "" {
			r.logger().Debug("launched command", "alloc_id", ref.AllocID, "run_id", s.ID, "pid", stdout.Quoted())
		}
		return nil
	case codeLaunched:
		if sent { // the launch session took our run after all
			if err := awaitPidRecord(ctx, ref.files(), runRel(s.ID), pidRecordWait); err != nil {
				return fmt.Errorf("%s in allocation %s: run %s: %w", what, ref.short(), s.ID, err)
			}
			return nil
		}
		return fmt.Errorf("%s in allocation %s: run %s: %w", what, ref.short(), s.ID, ErrAlreadyLaunched)
	case codeMkdir:
		return fmt.Errorf("%s in allocation %s: make run dir: %s", what, ref.short(), orExit(msg, code))
	case codeEnv:
		return fmt.Errorf("%s in allocation %s: write env file: %s", what, ref.short(), orExit(msg, code))
	case codeNoPid:
		return fmt.Errorf("%s in allocation %s: start supervisor: %s", what, ref.short(), orExit(msg, code))
	default:
		return fmt.Errorf("%s in allocation %s: launcher: %s", what, ref.short(), orExit(msg, code))
	}
}

// makeRunDir makes the run dir from the host, which costs microseconds where
// mkdir inside the sandbox costs an exec. It is world-writable and sticky
// because the sandbox's task user, unknown here, writes into it; the files in
// it are the task user's, and the env file is not among them. When it cannot
// be made (no host path, not root) the launcher makes it; when the sandbox has
// put something else in its way, the launch fails.
func (r *Runner) makeRunDir(ref Ref, runID string) error {
	if ref.HostAllocDir == "" {
		return nil
	}
	files := ref.files()
	for _, dir := range []string{path.Join("alloc", runDirName), runRel(runID)} {
		if err := files.Mkdir(dir, 0o1777); err != nil {
			if errors.Is(err, allocfs.ErrTampered) {
				return err
			}
			r.logger().Debug("could not make run dir from the host; the launcher will", "path", dir, "error", err)
			return nil
		}
	}
	return nil
}

// orExit is what an exec into the sandbox said on stderr, quoted and cut,
// and its exit code.
func orExit(stderr *untrusted.Buffer, code int) string {
	msg := stderr.Quoted()
	if msg == "" || msg == `""` {
		return fmt.Sprintf("exit code %d", code)
	}
	return fmt.Sprintf("%s (exit code %d)", msg, code)
}
