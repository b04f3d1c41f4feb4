package plugintest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/agentkernel/agentkernel-pool/plugin"
	"github.com/agentkernel/agentkernel-pool/plugin/proto/base"
	"github.com/agentkernel/agentkernel-pool/plugin/proto/drivers"
)

// Default client port range of a Nomad agent (client_min_port, client_max_port).
const (
	DefaultClientMinPort = 14000
	DefaultClientMaxPort = 14512
)

// Configure runs the long-lived instance's start-up as the Nomad client does:
// PluginInfo (checking type and API version), SetConfig with the agent's
// config, then Init.
func (c *Client) Configure(ctx context.Context, msgpackConfig []byte) error {
	version, err := c.apiVersion(ctx)
	if err != nil {
		return err
	}
	_, err = c.Base.SetConfig(ctx, &base.SetConfigRequest{
		MsgpackConfig:    msgpackConfig,
		PluginApiVersion: version,
		NomadConfig: &base.NomadConfig{Driver: &base.NomadDriverConfig{
			ClientMinPort: DefaultClientMinPort,
			ClientMaxPort: DefaultClientMaxPort,
		}},
	})
	if err != nil {
		return fmt.Errorf("set config: %w", err)
	}
	if _, err := c.Driver.Init(ctx, &drivers.InitRequest{}); err != nil {
		return fmt.Errorf("init: %w", err)
	}
	return nil
}

// ValidateConfig runs the validation instance's calls: SetConfig without the
// agent's config, twice, as the Nomad loader does.
func (c *Client) ValidateConfig(ctx context.Context, msgpackConfig []byte) error {
	version, err := c.apiVersion(ctx)
	if err != nil {
		return err
	}
	for i := 0; i < 2; i++ {
		req := &base.SetConfigRequest{MsgpackConfig: msgpackConfig, PluginApiVersion: version}
		if _, err := c.Base.SetConfig(ctx, req); err != nil {
			return fmt.Errorf("set config (validation, call %d): %w", i+1, err)
		}
	}
	return nil
}

// apiVersion applies the client's checks to PluginInfo and returns the plugin's
// own spelling of the negotiated version.
func (c *Client) apiVersion(ctx context.Context) (string, error) {
	info, err := c.Base.PluginInfo(ctx, &base.PluginInfoRequest{})
	if err != nil {
		return "", fmt.Errorf("plugin info: %w", err)
	}
	if info.GetType() != base.PluginType_DRIVER {
		return "", fmt.Errorf("plugin info: type %v, want DRIVER", info.GetType())
	}
	for _, v := range info.GetPluginApiVersions() {
		if v == plugin.APIVersion || "v"+v == plugin.APIVersion {
			return v, nil
		}
	}
	return "", fmt.Errorf("plugin info: no supported API version in %q", info.GetPluginApiVersions())
}

// NewTaskConfig returns a TaskConfig shaped like the client's: the id is
// <alloc id>/<task name>/<8 hex digits>, new on every call.
func NewTaskConfig(allocID, taskName string, driverConfig []byte) *drivers.TaskConfig {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return &drivers.TaskConfig{
		Id:                  allocID + "/" + taskName + "/" + hex.EncodeToString(b[:]),
		Name:                taskName,
		AllocId:             allocID,
		JobName:             "example",
		JobId:               "example",
		TaskGroupName:       "group",
		Namespace:           "default",
		NodeId:              "node-1",
		NodeName:            "node-1",
		Env:                 map[string]string{"NOMAD_TASK_NAME": taskName, "NOMAD_ALLOC_ID": allocID},
		MsgpackDriverConfig: driverConfig,
	}
}

// Msgpack encodes v (typically a map[string]any mirroring the schema) as the
// client would send a config; it fails the test on error.
func Msgpack(t testing.TB, v any) []byte {
	t.Helper()
	b, err := msgpack.Marshal(v)
	if err != nil {
		t.Fatalf("plugintest: msgpack encode: %v", err)
	}
	return b
}

// ExecResult is what a streamed exec produced.
type ExecResult struct {
	Stdout []byte
	Stderr []byte
	Result *drivers.ExitResult
}

// Exec runs a command through ExecTaskStreaming as `nomad alloc exec` does:
// setup first, then stdin (closed at EOF), collecting output until the final
// exited frame. For resizes or heartbeats use ExecStream and Collect instead:
// Send is not safe from two goroutines.
func (c *Client) Exec(ctx context.Context, taskID string, cmd []string, tty bool, stdin io.Reader) (*ExecResult, error) {
	stream, err := c.ExecStream(ctx, taskID, cmd, tty)
	if err != nil {
		return nil, err
	}
	if stdin != nil {
		go func() {
			buf := make([]byte, 32*1024)
			for {
				n, err := stdin.Read(buf)
				if n > 0 {
					data := append([]byte(nil), buf[:n]...)
					if stream.Send(&drivers.ExecTaskStreamingRequest{Stdin: &drivers.ExecTaskStreamingIOOperation{Data: data}}) != nil {
						return
					}
				}
				if err != nil {
					_ = stream.Send(&drivers.ExecTaskStreamingRequest{Stdin: &drivers.ExecTaskStreamingIOOperation{Close: true}})
					return
				}
			}
		}()
	}
	return Collect(stream)
}

// ExecStream opens an exec stream and sends the setup message.
func (c *Client) ExecStream(ctx context.Context, taskID string, cmd []string, tty bool) (drivers.Driver_ExecTaskStreamingClient, error) {
	stream, err := c.Driver.ExecTaskStreaming(ctx)
	if err != nil {
		return nil, err
	}
	setup := &drivers.ExecTaskStreamingRequest{Setup: &drivers.ExecTaskStreamingRequest_Setup{TaskId: taskID, Command: cmd, Tty: tty}}
	if err := stream.Send(setup); err != nil {
		return nil, err
	}
	return stream, nil
}

// Collect reads an exec stream to its end. Like the Nomad CLI it requires a
// final frame with exited and result set.
func Collect(stream drivers.Driver_ExecTaskStreamingClient) (*ExecResult, error) {
	res := &ExecResult{}
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			if res.Result == nil {
				return res, errors.New("exec stream closed before receiving exit code")
			}
			return res, nil
		}
		if err != nil {
			return res, err
		}
		res.Stdout = append(res.Stdout, msg.GetStdout().GetData()...)
		res.Stderr = append(res.Stderr, msg.GetStderr().GetData()...)
		if msg.GetExited() && msg.GetResult() != nil {
			res.Result = msg.GetResult()
		}
	}
}
