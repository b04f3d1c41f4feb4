package driver

import (
	"bytes"
	"context"
	"fmt"

	"github.com/hashicorp/nomad/api"

	"github.com/agentkernel/agentkernel-pool/internal/untrusted"
	"github.com/agentkernel/agentkernel-pool/plugin"
)

// ExecTaskStreaming implements plugin.Driver: `nomad alloc exec` on a sandbox task
// runs in the task's claimed allocation, with the task's env.
func (d *Driver) ExecTaskStreaming(ctx context.Context, taskID string, opts *plugin.ExecOptions) (*plugin.ExitResult, error) {
	h, b, err := d.taskAndBackend(taskID)
	if err != nil {
		return nil, err
	}
	resize := make(chan api.TerminalSize)
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		for {
			select {
			case <-rctx.Done():
				return
			case s, ok := <-opts.Resize:
				if !ok {
					return
				}
				select {
				case resize <- api.TerminalSize{Height: s.Height, Width: s.Width}:
				case <-rctx.Done():
					return
				}
			}
		}
	}()
	code, err := b.Exec(ctx, h.state.ref(), h.state.RunID, opts.Command, opts.Tty, opts.Stdin, opts.Stdout, opts.Stderr, resize)
	if err != nil {
		return nil, fmt.Errorf("exec in sandbox %s of task %q: %w", short(h.state.Claim.AllocID), taskID, err)
	}
	return &plugin.ExitResult{ExitCode: code}, nil
}

// checkOutput is what ExecTask keeps of each of a check's stdout and stderr:
// the last 4 KiB, as Nomad's own drivers keep of a script check's output
// (drivers/shared/structs.CheckBufSize, in a circular buffer). The check's
// command runs in the sandbox, which prints what it likes.
const checkOutput = 4 << 10

// ExecTask implements plugin.Driver (script checks).
func (d *Driver) ExecTask(ctx context.Context, taskID string, cmd []string) (*plugin.ExecResult, error) {
	h, b, err := d.taskAndBackend(taskID)
	if err != nil {
		return nil, err
	}
	stdout := untrusted.Buffer{Max: checkOutput, Tail: true}
	stderr := untrusted.Buffer{Max: checkOutput, Tail: true}
	code, err := b.Exec(ctx, h.state.ref(), h.state.RunID, cmd, false, bytes.NewReader(nil), &stdout, &stderr, nil)
	if err != nil {
		return nil, fmt.Errorf("exec in sandbox %s of task %q: %w", short(h.state.Claim.AllocID), taskID, err)
	}
	return &plugin.ExecResult{Stdout: stdout.Bytes(), Stderr: stderr.Bytes(), Exit: plugin.ExitResult{ExitCode: code}}, nil
}
