package api

import (
	"errors"
	"fmt"
	"net/http"
	"testing"

	"github.com/hyperhq/hyperd-go/agent/protocol"
	"github.com/hyperhq/hyperd-go/pod"
)

// TestStatusOf: typed errors first (the daemon's, then the agent's codes),
// the message only last; an agent's internal error that quotes an errno
// ("no such device") is a 500, not the client's 404.
func TestStatusOf(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want int
	}{
		{"spec", &pod.SpecError{Msg: "bad"}, 400},
		{"agent internal with errno text", fmt.Errorf("add container fb0: %w", protocol.Errorf(protocol.CodeInternal, "create container x: overlay: no such device")), 500},
		{"agent not found", fmt.Errorf("attach: %w", protocol.Errorf(protocol.CodeNotFound, "no such container: x")), 404},
		{"agent conflict", protocol.Errorf(protocol.CodeConflict, "tty process has no stderr"), 409},
		{"agent bad request", protocol.Errorf(protocol.CodeBadRequest, "bad dial"), 400},
		{"untyped internal text", errors.New("add container: internal: create: no such device"), 500},
		{"untyped not found", errors.New("no such image: x"), 404},
		{"other", errors.New("disk full"), http.StatusInternalServerError},
	} {
		if got := statusOf(tc.err); got != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, got, tc.want)
		}
	}
}
