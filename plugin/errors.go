package plugin

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/agentkernel/agentkernel-pool/plugin/proto/structs"
)

// recoverableError marks an error whose operation may succeed when retried.
type recoverableError struct{ err error }

func (e *recoverableError) Error() string { return e.err.Error() }
func (e *recoverableError) Unwrap() error { return e.err }

// Recoverable marks err as retryable: a StartTask failing with it lets the
// task's restart policy apply instead of failing the task for good. Nil stays nil.
func Recoverable(err error) error {
	if err == nil {
		return nil
	}
	return &recoverableError{err: err}
}

// IsRecoverable reports whether err, or an error it wraps, was marked with Recoverable.
func IsRecoverable(err error) bool {
	var r *recoverableError
	return errors.As(err, &r)
}

// toStatus turns a driver error into the gRPC status the Nomad client expects.
// Unavailable and Canceled are never produced for driver errors: the client reads
// them as "the plugin died" and may relaunch it and retry the call.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if IsRecoverable(err) {
		st := status.New(codes.FailedPrecondition, err.Error())
		// The client reads only the first detail, so it must be this one.
		withDetail, derr := st.WithDetails(&structs.RecoverableError{Recoverable: true})
		if derr != nil {
			return st.Err()
		}
		return withDetail.Err()
	}
	if st, ok := status.FromError(err); ok {
		switch st.Code() {
		case codes.Unavailable, codes.Canceled:
			return status.Error(codes.Unknown, st.Message())
		}
		return err
	}
	// No NotFound for an unknown task id: the client compares with its own
	// drivers.ErrTaskNotFound value, which nothing crossing gRPC turns back
	// into, so the code would change nothing it does.
	code := codes.Unknown
	if errors.Is(err, context.DeadlineExceeded) {
		code = codes.DeadlineExceeded
	}
	return status.Error(code, err.Error())
}
