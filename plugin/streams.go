package plugin

import (
	"context"
	"google.golang.org/grpc/status"
	"io"
	"sync"
	"time"

	"github.com/agentkernel/agentkernel-pool/plugin/proto/drivers"
)

// defaultStatsInterval applies when the client sends no collection interval.
const defaultStatsInterval = time.Second

// sender serialises Send on a gRPC stream, which is not safe for concurrent
// use, and refuses sends once the handler has returned.
type sender[T any] struct {
	mu     sync.Mutex
	send   func(T) error
	closed bool
}

func (s *sender[T]) Send(m T) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return io.ErrClosedPipe
	}
	return s.send(m)
}

// close makes later sends fail; the stream is unusable once its handler returns.
func (s *sender[T]) close() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
}

// forward sends every value of ch, converted, until ctx is done. When the
// driver closes ch early the stream is held open anyway: the client re-opens a
// closed Fingerprint or TaskEvents stream at once, which would be a hot loop.
func forward[V, M any](ctx context.Context, ch <-chan V, conv func(V) M, send func(M) error) error {
	for {
		select {
		case <-ctx.Done():
			// The client's reason: a nil would end the stream as finished.
			return status.FromContextError(ctx.Err()).Err()
		case v, ok := <-ch:
			if !ok {
				ch = nil // a nil channel blocks; wait for ctx alone
				continue
			}
			if err := send(conv(v)); err != nil {
				return err
			}
		}
	}
}

func (s *driverServer) Fingerprint(_ *drivers.FingerprintRequest, stream drivers.Driver_FingerprintServer) error {
	ctx := stream.Context()
	ch, err := s.d.Fingerprint(ctx)
	if err != nil {
		return toStatus(err)
	}
	out := &sender[*drivers.FingerprintResponse]{send: stream.Send}
	return forward(ctx, ch, fingerprintToProto, out.Send)
}

func (s *driverServer) TaskEvents(_ *drivers.TaskEventsRequest, stream drivers.Driver_TaskEventsServer) error {
	ctx := stream.Context()
	ch, err := s.d.TaskEvents(ctx)
	if err != nil {
		return toStatus(err)
	}
	out := &sender[*drivers.DriverTaskEvent]{send: stream.Send}
	return forward(ctx, ch, taskEventToProto, out.Send)
}

// TaskStats also holds the stream open after the driver's channel closes: an
// ended stream makes the client log an error and re-open it every interval.
func (s *driverServer) TaskStats(req *drivers.TaskStatsRequest, stream drivers.Driver_TaskStatsServer) error {
	ctx := stream.Context()
	taskID := req.GetTaskId()
	interval := req.GetCollectionInterval().AsDuration()
	if interval <= 0 {
		interval = defaultStatsInterval
	}
	ch, err := s.d.TaskStats(ctx, taskID, interval)
	if err != nil {
		return toStatus(err)
	}
	out := &sender[*drivers.TaskStatsResponse]{send: stream.Send}
	conv := func(u *TaskResourceUsage) *drivers.TaskStatsResponse { return taskStatsToProto(u, taskID) }
	return forward(ctx, ch, conv, out.Send)
}
