package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/hashicorp/nomad/api"
)

// Operations of the Nomad API calls a Runner makes (OnCall).
const (
	// OpExec is an exec round trip: a launch without a session, a
	// signal.
	OpExec = "alloc.exec"
	// OpExecSession is an exec that stays open: a launch session, or a
	// user's exec into the task. It lasts as long as the session.
	OpExecSession = "alloc.exec.session"
)

// call executes cmd in the sandbox in one round trip (OpExec), through the
// test transport or the Nomad API.
func (r *Runner) call(ctx context.Context, ref Ref, tty bool, cmd []string,
	stdin io.Reader, stdout, stderr io.Writer, resize <-chan api.TerminalSize) (int, error) {
	return r.execAs(ctx, OpExec, ref, tty, cmd, stdin, stdout, stderr, resize)
}

// execAs executes cmd in the sandbox, as operation op for OnCall. It returns
// when ctx ends even if the API call is stuck connecting, which the API client
// does without a deadline.
func (r *Runner) execAs(ctx context.Context, op string, ref Ref, tty bool, cmd []string,
	stdin io.Reader, stdout, stderr io.Writer, resize <-chan api.TerminalSize) (int, error) {
	if r.exec != nil {
		return r.exec(ctx, ref, tty, cmd, stdin, stdout, stderr, resize)
	}
	if r.Client == nil {
		return -1, errors.New("no nomad api client")
	}
	type result struct {
		code int
		err  error
	}
	done := make(chan result, 1)
	go func() {
		// Without a NodeID the client's node lookup finds nothing, and it execs
		// through the agent it talks to (this node's own) instead of dialing the
		// node's advertised address.
		alloc := &api.Allocation{ID: ref.AllocID, Namespace: ref.Namespace}
		q := r.query(ctx, ref.Namespace)
		began := time.Now()
		code, err := r.Client.Allocations().Exec(ctx, alloc, ref.Task, tty, cmd, stdin, stdout, stderr, resize, q)
		if r.OnCall != nil {
			r.OnCall(op, time.Since(began), err)
		}
		done <- result{code, err}
	}()
	select {
	case res := <-done:
		if res.err != nil {
			return res.code, execError(ctx, res.err)
		}
		return res.code, nil
	case <-ctx.Done():
		return -1, fmt.Errorf("exec session: %w", ctx.Err())
	}
}

// execError makes the API client's errors say what happened.
func execError(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("exec session: %w", ctx.Err())
	}
	var ue api.UnexpectedResponseError
	if errors.As(err, &ue) && ue.StatusCode() == http.StatusNotFound {
		return fmt.Errorf("%w: %w", ErrAllocGone, err)
	}
	// The agent refuses an exec into a gone sandbox in the websocket's close
	// frame, which the API client turns into a plain error.
	if msg := strings.ToLower(err.Error()); strings.Contains(msg, "unknown allocation") ||
		strings.Contains(msg, "is not running") {
		return fmt.Errorf("%w: %w", ErrAllocGone, err)
	}
	return err
}
