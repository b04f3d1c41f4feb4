package plugin

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime/debug"

	"github.com/hashicorp/go-hclog"
	goplugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/agentkernel/agentkernel-pool/plugin/proto/base"
	"github.com/agentkernel/agentkernel-pool/plugin/proto/drivers"
)

// MaxRecvMsgSize bounds one request; gRPC's 4 MiB default is too small for a
// StartTask with a large environment or driver config.
const MaxRecvMsgSize = 64 << 20

// Handshake is Nomad's go-plugin handshake: app protocol 2 and its magic cookie.
var Handshake = goplugin.HandshakeConfig{
	ProtocolVersion:  2,
	MagicCookieKey:   "NOMAD_PLUGIN_MAGIC_COOKIE",
	MagicCookieValue: "e4327c2e01eabfd75a8a67adb114fb34a757d57eee7728d857a8cec6e91a7255",
}

// Plugin-set names Nomad's client dispenses; they never travel on the wire.
const (
	PluginNameBase   = "base"
	PluginNameDriver = "driver"
	PluginNameDevice = "device"
)

// NewLogger returns the JSON logger the Nomad client parses from the plugin's
// stderr. Create it before Serve: go-plugin swaps os.Stderr for a pipe whose
// output Nomad discards, and this logger keeps the original fd 2.
func NewLogger(name string) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{
		Name:       name,
		Level:      hclog.Trace,
		Output:     os.Stderr,
		JSONFormat: true,
	})
}

// LaunchedByNomad reports whether this process was started as a plugin (the
// magic cookie is in its environment), so main can choose between Serve and a CLI.
func LaunchedByNomad() bool {
	return os.Getenv(Handshake.MagicCookieKey) == Handshake.MagicCookieValue
}

// Serve serves d to the Nomad client that launched this process and returns
// when the client is done with it. A nil logger means NewLogger("plugin").
func Serve(d Driver, logger hclog.Logger) {
	goplugin.Serve(ServeConfig(d, logger))
}

// ServeConfig is the go-plugin configuration Serve uses; tests set its Test
// field to serve in-process. A nil logger means NewLogger("plugin").
func ServeConfig(d Driver, logger hclog.Logger) *goplugin.ServeConfig {
	return serveConfig(d, base.PluginType_DRIVER, APIVersion, PluginNameDriver, logger, func(s *grpc.Server, logger hclog.Logger) {
		drivers.RegisterDriverServer(s, &driverServer{d: d, logger: logger})
	})
}

// serveConfig is the go-plugin configuration of a plugin p of type typ that
// speaks API version api: BasePlugin, and p's own service, which register
// puts on the server under the plugin-set name name. A nil logger means
// NewLogger("plugin").
func serveConfig(p Base, typ base.PluginType, api, name string, logger hclog.Logger, register func(*grpc.Server, hclog.Logger)) *goplugin.ServeConfig {
	if logger == nil {
		logger = NewLogger("plugin")
	}
	return &goplugin.ServeConfig{
		HandshakeConfig: Handshake,
		Plugins: goplugin.PluginSet{
			PluginNameBase: &grpcPlugin{register: func(s *grpc.Server) {
				base.RegisterBasePluginServer(s, &baseServer{d: p, typ: typ, api: api, logger: logger})
			}},
			name: &grpcPlugin{register: func(s *grpc.Server) { register(s, logger) }},
		},
		GRPCServer: newGRPCServer(logger),
		Logger:     logger,
	}
}

// grpcPlugin registers one service on go-plugin's shared gRPC server. It is
// server-side only; clients dial the generated stubs directly.
type grpcPlugin struct {
	goplugin.NetRPCUnsupportedPlugin
	register func(*grpc.Server)
}

func (p *grpcPlugin) GRPCServer(_ *goplugin.GRPCBroker, s *grpc.Server) error {
	p.register(s)
	return nil
}

func (p *grpcPlugin) GRPCClient(context.Context, *goplugin.GRPCBroker, *grpc.ClientConn) (any, error) {
	return nil, errors.New("agentkernel plugin set is server-side only")
}

// newGRPCServer raises the receive limit and recovers panics that escape a
// handler, so no RPC can crash the process.
func newGRPCServer(logger hclog.Logger) func([]grpc.ServerOption) *grpc.Server {
	return func(opts []grpc.ServerOption) *grpc.Server {
		opts = append(opts,
			grpc.MaxRecvMsgSize(MaxRecvMsgSize),
			grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (resp any, err error) {
				defer recoverRPC(logger, info.FullMethod, &err)
				return h(ctx, req)
			}),
			grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) (err error) {
				defer recoverRPC(logger, info.FullMethod, &err)
				return h(srv, ss)
			}),
		)
		return grpc.NewServer(opts...)
	}
}

func recoverRPC(logger hclog.Logger, method string, err *error) {
	if r := recover(); r != nil {
		logger.Error("rpc handler panicked", "method", method, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
		*err = status.Errorf(codes.Internal, "plugin panicked in %s: %v", method, r)
	}
}
