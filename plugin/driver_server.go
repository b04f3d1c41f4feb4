package plugin

import (
	"context"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/agentkernel/agentkernel-pool/plugin/proto/drivers"
)

// driverServer serves hashicorp.nomad.plugins.drivers.proto.Driver. The
// streaming RPCs live in streams.go and exec_stream.go. CreateNetwork and
// DestroyNetwork stay Unimplemented: drivers here never set must_create_network.
type driverServer struct {
	drivers.UnimplementedDriverServer
	d      Driver
	logger hclog.Logger
}

func (s *driverServer) Init(ctx context.Context, _ *drivers.InitRequest) (*drivers.InitResponse, error) {
	if i, ok := s.d.(Initializer); ok {
		if err := i.Init(ctx); err != nil {
			return nil, toStatus(err)
		}
	}
	return &drivers.InitResponse{}, nil
}

func (s *driverServer) Shutdown(ctx context.Context, _ *drivers.ShutdownRequest) (*drivers.ShutdownResponse, error) {
	if sd, ok := s.d.(Shutdowner); ok {
		if err := sd.Shutdown(ctx); err != nil {
			return nil, toStatus(err)
		}
	}
	return &drivers.ShutdownResponse{}, nil
}

func (s *driverServer) TaskConfigSchema(context.Context, *drivers.TaskConfigSchemaRequest) (*drivers.TaskConfigSchemaResponse, error) {
	spec := s.d.TaskConfigSchema()
	if spec == nil {
		// The client would fail the task with a bare "nil spec given".
		return nil, status.Error(codes.FailedPrecondition, "driver has no task config schema")
	}
	return &drivers.TaskConfigSchemaResponse{Spec: spec}, nil
}

func (s *driverServer) Capabilities(context.Context, *drivers.CapabilitiesRequest) (*drivers.CapabilitiesResponse, error) {
	caps := s.d.Capabilities()
	return &drivers.CapabilitiesResponse{Capabilities: capabilitiesToProto(caps)}, nil
}

func (s *driverServer) StartTask(ctx context.Context, req *drivers.StartTaskRequest) (*drivers.StartTaskResponse, error) {
	if req.GetTask() == nil {
		return nil, status.Error(codes.InvalidArgument, "start task: request has no task config")
	}
	cfg := taskConfigFromProto(req.GetTask())
	handle, override, err := s.d.StartTask(ctx, cfg)
	if err != nil {
		s.logger.Debug("start task failed", "task_id", cfg.ID, "recoverable", IsRecoverable(err), "error", err)
		return nil, toStatus(err)
	}
	if handle == nil {
		// Without a handle the client cannot recover the task and would start it twice.
		return nil, status.Errorf(codes.Internal, "start task %q: driver returned no handle", cfg.ID)
	}
	return &drivers.StartTaskResponse{
		Result:          drivers.StartTaskResponse_SUCCESS,
		Handle:          taskHandleToProto(handle, req.GetTask()),
		NetworkOverride: networkOverrideToProto(override),
	}, nil
}

func (s *driverServer) RecoverTask(ctx context.Context, req *drivers.RecoverTaskRequest) (*drivers.RecoverTaskResponse, error) {
	handle := taskHandleFromProto(req.GetHandle())
	if handle == nil {
		return nil, status.Error(codes.InvalidArgument, "recover task: request has no handle")
	}
	if handle.Config == nil {
		// The client always sends handle.config; keep the id usable if it did not.
		handle.Config = &TaskConfig{ID: req.GetTaskId()}
	}
	err := s.d.RecoverTask(ctx, handle)
	if err != nil {
		return nil, toStatus(err)
	}
	return &drivers.RecoverTaskResponse{}, nil
}

// WaitTask fails with an error status when the driver fails (an unknown id,
// say): the client turns that into an exit with Err. An answer always carries
// result, because clients before 1.11.3 dereference it unconditionally.
func (s *driverServer) WaitTask(ctx context.Context, req *drivers.WaitTaskRequest) (*drivers.WaitTaskResponse, error) {
	res, err := s.d.WaitTask(ctx, req.GetTaskId())
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &drivers.WaitTaskResponse{Result: exitResultToProto(res)}
	if res != nil {
		resp.Err = res.Err
	}
	return resp, nil
}

func (s *driverServer) StopTask(ctx context.Context, req *drivers.StopTaskRequest) (*drivers.StopTaskResponse, error) {
	timeout := req.GetTimeout().AsDuration()
	err := s.d.StopTask(ctx, req.GetTaskId(), timeout, req.GetSignal())
	if err != nil {
		return nil, toStatus(err)
	}
	return &drivers.StopTaskResponse{}, nil
}

func (s *driverServer) DestroyTask(ctx context.Context, req *drivers.DestroyTaskRequest) (*drivers.DestroyTaskResponse, error) {
	err := s.d.DestroyTask(ctx, req.GetTaskId(), req.GetForce())
	if err != nil {
		return nil, toStatus(err)
	}
	return &drivers.DestroyTaskResponse{}, nil
}

func (s *driverServer) InspectTask(ctx context.Context, req *drivers.InspectTaskRequest) (*drivers.InspectTaskResponse, error) {
	st, err := s.d.InspectTask(ctx, req.GetTaskId())
	if err != nil {
		return nil, toStatus(err)
	}
	return taskStatusToProto(st, req.GetTaskId()), nil
}

func (s *driverServer) SignalTask(ctx context.Context, req *drivers.SignalTaskRequest) (*drivers.SignalTaskResponse, error) {
	err := s.d.SignalTask(ctx, req.GetTaskId(), req.GetSignal())
	if err != nil {
		return nil, toStatus(err)
	}
	return &drivers.SignalTaskResponse{}, nil
}

func (s *driverServer) ExecTask(ctx context.Context, req *drivers.ExecTaskRequest) (*drivers.ExecTaskResponse, error) {
	if len(req.GetCommand()) == 0 {
		return nil, status.Error(codes.InvalidArgument, "exec task: empty command")
	}
	if t := req.GetTimeout().AsDuration(); t > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, t)
		defer cancel()
	}
	res, err := s.d.ExecTask(ctx, req.GetTaskId(), req.GetCommand())
	if err != nil {
		return nil, toStatus(err)
	}
	if res == nil {
		return &drivers.ExecTaskResponse{Result: exitResultToProto(nil)}, nil
	}
	return &drivers.ExecTaskResponse{Stdout: res.Stdout, Stderr: res.Stderr, Result: exitResultToProto(&res.Exit)}, nil
}
