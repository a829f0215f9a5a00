// This file owns the error types the API maps to HTTP statuses.

package pod

import "fmt"

// NotFoundError: an unknown pod, container, exec or image (HTTP 404).
type NotFoundError struct{ Msg string }

func (e *NotFoundError) Error() string { return e.Msg }

// ConflictError: the request conflicts with current state (HTTP 409).
type ConflictError struct{ Msg string }

func (e *ConflictError) Error() string { return e.Msg }

// NotImplementedError: the operation is not supported by this daemon or
// its sandbox driver (HTTP 501).
type NotImplementedError struct{ Msg string }

func (e *NotImplementedError) Error() string { return e.Msg }

func notFound(format string, a ...any) error {
	return &NotFoundError{Msg: fmt.Sprintf(format, a...)}
}

func conflict(format string, a ...any) error {
	return &ConflictError{Msg: fmt.Sprintf(format, a...)}
}
