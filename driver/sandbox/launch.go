package sandbox

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path"
	"strings"

	"github.com/agentkernel/agentkernel-pool/driver/allocfs"
)

// Launch starts s.Command with s.Args and s.Env in the sandbox, detached from
// this process: through the launch daemon when the sandbox is primed, else in one
// exec round trip. It returns once the command's pid is recorded. A run id
// launched before gives ErrAlreadyLaunched and starts nothing. Without a command
// it only writes the run's env for Exec.
func (r *Runner) Launch(ctx context.Context, ref Ref, s Spec) error {
	if err := checkRunID(s.ID); err != nil {
		return fmt.Errorf("launch command in allocation %s: %w", ref.short(), err)
	}
	env, skipped := envFile(s.Env)
	if len(skipped) > 0 {
		r.logger().Warn("env variables a shell cannot export were left out", "alloc_id", ref.AllocID, "run_id", s.ID, "names", skipped)
	}
	if err := r.makeRunDir(ref, s.ID); err != nil {
		return fmt.Errorf("launch command in allocation %s: %w", ref.short(), err)
	}
	ctx, cancel := withTimeout(ctx, orDefault(r.LaunchTimeout, DefaultLaunchTimeout))
	defer cancel()
	what := "launch command"
	if s.Command == "" {
		what = "prepare run"
	}

	sent := false
	if sess := r.takeSession(ref.AllocID); sess != nil {
		ok, wrote, err := r.launchSession(ctx, sess, s, env)
		if ok {
			if err != nil {
				return fmt.Errorf("%s in allocation %s: run %s: %w", what, ref.short(), s.ID, err)
			}
			return nil
		}
		sent = wrote
		r.logger().Warn("launch session ended before it answered; launching by exec", "alloc_id", ref.AllocID, "run_id", s.ID)
	}
	var stdout, stderr bytes.Buffer
	code, err := r.call(ctx, ref, false, launchCommand(s.ID, s, len(env)), bytes.NewReader(env), &stdout, &stderr, nil)
	if err != nil {
		return fmt.Errorf("%s in allocation %s: %w", what, ref.short(), err)
	}
	msg := strings.TrimSpace(stderr.String())
	switch code {
	case 0:
		if s.Command != "" {
			r.logger().Debug("launched command", "alloc_id", ref.AllocID, "run_id", s.ID, "pid", strings.TrimSpace(stdout.String()))
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

func orExit(msg string, code int) string {
	if msg == "" {
		return fmt.Sprintf("exit code %d", code)
	}
	return fmt.Sprintf("%s (exit code %d)", msg, code)
}

// Cleanup removes the run's env file from the sandbox, best effort: the sandbox
// is single-use and purged anyway, this only shortens the secrets' life.
func (r *Runner) Cleanup(ctx context.Context, ref Ref, runID string) error {
	if err := checkRunID(runID); err != nil {
		return fmt.Errorf("clean up run in allocation %s: %w", ref.short(), err)
	}
	// The secrets dir is a host dir (or a tmpfs mounted there) under every driver
	// that has one: remove the file from the host when the dir is visible.
	if ref.HostAllocDir != "" {
		files := ref.files()
		if ok, err := files.Exists(ref.secretsRel()); err == nil && ok {
			return files.Remove(ref.envRel(runID))
		}
	}
	ctx, cancel := withTimeout(ctx, orDefault(r.CallTimeout, DefaultCallTimeout))
	defer cancel()
	var stderr bytes.Buffer
	code, err := r.call(ctx, ref, false, []string{"/bin/sh", "-c", cleanupScript, "akp-cleanup", runID},
		bytes.NewReader(nil), &bytes.Buffer{}, &stderr, nil)
	if err != nil {
		return fmt.Errorf("clean up run %s in allocation %s: %w", runID, ref.short(), err)
	}
	if code != 0 {
		return fmt.Errorf("clean up run %s in allocation %s: %s", runID, ref.short(), orExit(strings.TrimSpace(stderr.String()), code))
	}
	return nil
}
