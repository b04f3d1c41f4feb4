package plugin_test

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/agentkernel/agentkernel-pool/plugin/plugintest"
	"github.com/agentkernel/agentkernel-pool/plugin/proto/drivers"
)

func TestExecStreamingSequence(t *testing.T) {
	_, c, ctx := setup(t)
	cfg := fullTaskConfig(t)
	startTask(t, c, cfg)

	stream, err := c.ExecStream(ctx, cfg.Id, []string{"cat"}, true)
	if err != nil {
		t.Fatal(err)
	}
	frames := []*drivers.ExecTaskStreamingRequest{
		{}, // heartbeat
		{TtySize: &drivers.ExecTaskStreamingRequest_TerminalSize{Height: 24, Width: 80}},
		{Stdin: &drivers.ExecTaskStreamingIOOperation{Data: []byte("hello ")}},
		{}, // heartbeat
		{Stdin: &drivers.ExecTaskStreamingIOOperation{Data: []byte("world")}},
		{Stdin: &drivers.ExecTaskStreamingIOOperation{Close: true}},
	}
	for _, f := range frames {
		if err := stream.Send(f); err != nil {
			t.Fatalf("send %v: %v", f, err)
		}
	}
	res, err := plugintest.Collect(stream)
	if err != nil {
		t.Fatalf("collect: %v", err)
	}
	if string(res.Stdout) != "hello world<eof>" {
		t.Fatalf("stdout = %q", res.Stdout)
	}
	if string(res.Stderr) != "resize 24x80\n" {
		t.Fatalf("stderr = %q", res.Stderr)
	}
	if res.Result.GetExitCode() != 7 {
		t.Fatalf("exit code = %d, want 7", res.Result.GetExitCode())
	}
}

func TestExecStreamingStdinHelper(t *testing.T) {
	_, c, ctx := setup(t)
	cfg := fullTaskConfig(t)
	startTask(t, c, cfg)
	res, err := c.Exec(ctx, cfg.Id, []string{"cat"}, false, strings.NewReader("piped"))
	if err != nil {
		t.Fatal(err)
	}
	if string(res.Stdout) != "piped<eof>" || res.Result.GetExitCode() != 7 {
		t.Fatalf("exec = %q, %v", res.Stdout, res.Result)
	}
}

func TestExecStreamingFirstMessageMustBeSetup(t *testing.T) {
	_, c, ctx := setup(t)
	stream, err := c.Driver.ExecTaskStreaming(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&drivers.ExecTaskStreamingRequest{Stdin: &drivers.ExecTaskStreamingIOOperation{Data: []byte("x")}}); err != nil {
		t.Fatal(err)
	}
	_, err = stream.Recv()
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "setup") {
		t.Fatalf("recv = %v, want InvalidArgument about setup", err)
	}
}

func TestExecStreamingUnknownTask(t *testing.T) {
	_, c, ctx := setup(t)
	_, err := c.Exec(ctx, "no/such/task", []string{"cat"}, false, nil)
	assertAppError(t, err, "task not found")
}

func TestExecStreamingPanic(t *testing.T) {
	d, c, ctx := setup(t)
	d.locked(func() { d.panicIn = "ExecTaskStreaming" })
	_, err := c.Exec(ctx, "any", []string{"cat"}, false, nil)
	assertAppError(t, err, "boom in ExecTaskStreaming")
}

func TestExecStreamingClientGoneCancelsCommand(t *testing.T) {
	d, c, ctx := setup(t)
	cfg := fullTaskConfig(t)
	startTask(t, c, cfg)
	streamCtx, cancel := context.WithCancel(ctx)
	stream, err := c.ExecStream(streamCtx, cfg.Id, []string{"hang"}, false)
	if err != nil {
		t.Fatal(err)
	}
	_ = stream
	select {
	case <-d.execStarted:
	case <-ctx.Done():
		t.Fatal("exec command never started")
	}
	cancel()
	select {
	case <-d.execCtxDone:
	case <-ctx.Done():
		t.Fatal("exec command still running after the client went away")
	}
}
