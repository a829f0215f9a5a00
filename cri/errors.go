// This file owns the mapping of the core's errors to gRPC status codes.

package cri

import (
	"context"
	"errors"
	"fmt"

	"github.com/hyperhq/hyperd-go/pod"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// grpcErr turns a core error into a gRPC status: a bad parameter is
// InvalidArgument, an unknown object NotFound, a conflict with the
// object's state FailedPrecondition, an unsupported operation
// Unimplemented, a cancelled or timed out context Canceled or
// DeadlineExceeded; anything else is Internal.
func grpcErr(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	var (
		spec *pod.SpecError
		nf   *pod.NotFoundError
		cf   *pod.ConflictError
		ni   *pod.NotImplementedError
	)
	switch {
	case errors.As(err, &spec):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.As(err, &nf), errors.Is(err, pod.ErrImageNotFound), errors.Is(err, ErrImageNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.As(err, &cf):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.As(err, &ni):
		return status.Error(codes.Unimplemented, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	}
	return status.Error(codes.Internal, err.Error())
}

// errLagged ends an event stream whose client fell behind.
var errLagged = status.Error(codes.ResourceExhausted, "container events: the client fell behind and events were lost; list the containers again and reconnect")

func invalid(format string, a ...any) error {
	return status.Error(codes.InvalidArgument, fmt.Sprintf(format, a...))
}

func notFound(format string, a ...any) error {
	return status.Error(codes.NotFound, fmt.Sprintf(format, a...))
}

func precondition(format string, a ...any) error {
	return status.Error(codes.FailedPrecondition, fmt.Sprintf(format, a...))
}

// isNotFound: the core does not know the object.
func isNotFound(err error) bool {
	var nf *pod.NotFoundError
	return errors.As(err, &nf)
}
