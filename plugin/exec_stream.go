package plugin

import (
	"context"
	"errors"
	"io"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/agentkernel/agentkernel-pool/plugin/proto/drivers"
)

// resizeBuffer holds pending tty resizes; only the latest one matters, so
// older ones are dropped when the driver is slow to read them.
const resizeBuffer = 4

// ExecTaskStreaming runs `nomad alloc exec`: the first message must be setup,
// then stdin, tty resizes and heartbeats arrive until the user goes away, and
// the final frame carries exited and the result (the CLI waits for it).
func (s *driverServer) ExecTaskStreaming(stream drivers.Driver_ExecTaskStreamingServer) error {
	first, err := stream.Recv()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return status.Error(codes.InvalidArgument, "exec stream: closed before setup")
		}
		return err
	}
	setup := first.GetSetup()
	if setup == nil || first.GetStdin() != nil || first.GetTtySize() != nil {
		return status.Error(codes.InvalidArgument, "exec stream: first message must be setup only")
	}
	if len(setup.GetCommand()) == 0 {
		return status.Error(codes.InvalidArgument, "exec stream: empty command")
	}

	// ctx ends when the client goes away (the stream context) or when we return.
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()

	out := &sender[*drivers.ExecTaskStreamingResponse]{send: stream.Send}
	// Output a driver goroutine writes after we return must not reach the stream.
	defer out.close()
	stdinR, stdinW := io.Pipe()
	resize := make(chan TerminalSize, resizeBuffer)
	go func() {
		defer close(resize)
		s.execReceive(ctx, cancel, stream, stdinW, resize)
	}()
	defer func() {
		// Unblocks a receive loop stuck writing stdin nobody reads any more.
		_ = stdinR.CloseWithError(io.ErrClosedPipe)
	}()

	opts := &ExecOptions{
		Command: setup.GetCommand(),
		Tty:     setup.GetTty(),
		Stdin:   stdinR,
		Stdout:  &execWriter{ctx: ctx, out: out, stderr: false},
		Stderr:  &execWriter{ctx: ctx, out: out, stderr: true},
		Resize:  resize,
	}
	taskID := setup.GetTaskId()
	s.logger.Debug("exec stream started", "task_id", taskID, "tty", opts.Tty)
	res, err := s.d.ExecTaskStreaming(ctx, taskID, opts)
	if err != nil {
		s.logger.Debug("exec stream failed", "task_id", taskID, "error", err)
		return toStatus(err)
	}
	final := &drivers.ExecTaskStreamingResponse{Exited: true, Result: exitResultToProto(res)}
	if err := out.Send(final); err != nil {
		return err
	}
	return nil
}

// execReceive forwards the client's frames until the stream ends. It is the
// only sender on resize and the only writer of stdin.
func (s *driverServer) execReceive(ctx context.Context, cancel context.CancelFunc, stream drivers.Driver_ExecTaskStreamingServer,
	stdin *io.PipeWriter, resize chan TerminalSize) {
	stdinClosed := false
	for {
		msg, err := stream.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				// A half-close is not the user leaving: stdin ends, output goes on.
				_ = stdin.Close()
				return
			}
			// The client went away: stop the command.
			_ = stdin.CloseWithError(err)
			cancel()
			return
		}
		switch {
		case msg.GetSetup() != nil:
			s.logger.Warn("exec stream: ignoring repeated setup")
		case msg.GetStdin() != nil:
			in := msg.GetStdin()
			if stdinClosed {
				continue
			}
			if len(in.GetData()) > 0 {
				if _, err := stdin.Write(in.GetData()); err != nil {
					// The driver closed stdin; drop further input.
					stdinClosed = true
					continue
				}
			}
			if in.GetClose() {
				_ = stdin.Close()
				stdinClosed = true
			}
		case msg.GetTtySize() != nil:
			sz := TerminalSize{Height: int(msg.GetTtySize().GetHeight()), Width: int(msg.GetTtySize().GetWidth())}
			sendLatest(ctx, resize, sz)
		default:
			// Empty frame: the API client's heartbeat.
		}
	}
}

// sendLatest queues sz without ever blocking the receive loop, dropping the
// oldest pending size when the driver is not reading.
func sendLatest(ctx context.Context, ch chan TerminalSize, sz TerminalSize) {
	for ctx.Err() == nil {
		select {
		case ch <- sz:
			return
		default:
		}
		select {
		case <-ch:
		default:
		}
	}
}

// execWriter sends the driver's output as stdout or stderr frames.
type execWriter struct {
	ctx    context.Context
	out    *sender[*drivers.ExecTaskStreamingResponse]
	stderr bool
}

func (w *execWriter) Write(p []byte) (int, error) {
	if err := w.ctx.Err(); err != nil {
		return 0, io.ErrClosedPipe
	}
	if len(p) == 0 {
		return 0, nil
	}
	// io.Writer callers may reuse p once Write returns; gRPC may encode later.
	op := &drivers.ExecTaskStreamingIOOperation{Data: append([]byte(nil), p...)}
	msg := &drivers.ExecTaskStreamingResponse{}
	if w.stderr {
		msg.Stderr = op
	} else {
		msg.Stdout = op
	}
	if err := w.out.Send(msg); err != nil {
		return 0, err
	}
	return len(p), nil
}
