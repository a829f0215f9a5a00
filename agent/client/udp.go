package client

import (
	"net"
	"sync"

	"github.com/hyperhq/hyperd-go/agent/protocol"
)

// datagramConn gives a udp dial stream datagram semantics: each Write sends
// one datagram, each Read returns one (truncated to the buffer, as a UDP
// socket would).
type datagramConn struct {
	net.Conn
	rmu sync.Mutex
	buf []byte
	wmu sync.Mutex
}

func (d *datagramConn) Read(p []byte) (int, error) {
	d.rmu.Lock()
	defer d.rmu.Unlock()
	if d.buf == nil {
		d.buf = make([]byte, protocol.MaxDatagram)
	}
	n, err := protocol.ReadDatagram(d.Conn, d.buf)
	if err != nil {
		return 0, err
	}
	return copy(p, d.buf[:n]), nil
}

func (d *datagramConn) Write(p []byte) (int, error) {
	d.wmu.Lock()
	defer d.wmu.Unlock()
	if err := protocol.WriteDatagram(d.Conn, p); err != nil {
		return 0, err
	}
	return len(p), nil
}
