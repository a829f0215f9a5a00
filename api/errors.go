package api

// errors.go owns the one mapping from daemon errors to HTTP statuses
// (statusOf), the JSON error body (writeError) and the way every handler
// fails a request (fail); badParam makes the 400 of a bad request.

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/hyperhq/hyperd-go/agent/protocol"
	"github.com/hyperhq/hyperd-go/pod"
)

// statusOf maps an error to the original's status codes.
func statusOf(err error) int {
	var se *pod.SpecError
	var nf *pod.NotFoundError
	var cf *pod.ConflictError
	var ni *pod.NotImplementedError
	switch {
	case errors.As(err, &se):
		return http.StatusBadRequest
	case errors.As(err, &nf):
		return http.StatusNotFound
	case errors.As(err, &cf):
		return http.StatusConflict
	case errors.As(err, &ni):
		return http.StatusNotImplemented
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout
	}
	var pe *protocol.Error
	if errors.As(err, &pe) {
		switch pe.Code {
		case protocol.CodeNotFound:
			return http.StatusNotFound
		case protocol.CodeBadRequest:
			return http.StatusBadRequest
		case protocol.CodeConflict:
			return http.StatusConflict
		}
		return http.StatusInternalServerError
	}
	m := strings.ToLower(err.Error())
	switch {
	case strings.Contains(m, "internal:"):
		// the agent's internal errors carry host or guest errno text
		// ("overlay: no such device") that is no 404 of the client's
		return http.StatusInternalServerError
	case strings.Contains(m, "not found") || strings.Contains(m, "no such"):
		return http.StatusNotFound
	case strings.Contains(m, "bad parameter"):
		return http.StatusBadRequest
	case strings.Contains(m, "conflict"):
		return http.StatusConflict
	}
	return http.StatusInternalServerError
}

// fail answers err with its status; a server-side error (5xx) is logged.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	s.failWith(w, r, statusOf(err), err)
}

// failWith answers err with code: for a handler that knows better than
// statusOf what an error of its own means.
func (s *Server) failWith(w http.ResponseWriter, r *http.Request, code int, err error) {
	if code >= 500 {
		s.Log.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	writeError(w, code, err.Error())
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, ErrorResponse{Message: msg})
}

// badParam is a request the client got wrong: 400.
func badParam(format string, a ...any) error {
	return &pod.SpecError{Msg: "bad parameter: " + fmt.Sprintf(format, a...)}
}
