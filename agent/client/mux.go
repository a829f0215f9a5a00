package client

import (
	"context"
	"net"

	"github.com/hyperhq/hyperd-go/agent/mux"
)

// MuxDialer opens each connection as a stream of a mux session (the
// client end of agent.SerialTransport: a serial port or virtio-console).
func MuxDialer(s *mux.Session) Dialer {
	return func(ctx context.Context) (net.Conn, error) {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		return s.Open()
	}
}
