package agent

import (
	"errors"
	"net"
	"sync"
	"syscall"

	"github.com/hyperhq/hyperd-go/agent/protocol"
)

// spliceUDP relays between a dial stream c, carrying framed datagrams
// (protocol.WriteDatagram), and a connected UDP socket u, one datagram per
// frame both ways. It ends when the stream ends.
func spliceUDP(c, u net.Conn) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // socket -> stream
		defer wg.Done()
		buf := make([]byte, protocol.MaxDatagram)
		for {
			n, err := u.Read(buf)
			if err != nil {
				if ne, ok := err.(net.Error); ok && ne.Timeout() {
					return
				}
				// ICMP port unreachable surfaces as ECONNREFUSED on a
				// connected UDP socket: the datagram is lost, as in UDP
				if isConnRefused(err) {
					continue
				}
				return
			}
			if protocol.WriteDatagram(c, buf[:n]) != nil {
				return
			}
		}
	}()
	buf := make([]byte, protocol.MaxDatagram)
	for {
		n, err := protocol.ReadDatagram(c, buf)
		if err != nil {
			break
		}
		u.Write(buf[:n]) // UDP: a lost datagram is not an error of the stream
	}
	u.Close() // ends the reader
	wg.Wait()
	c.Close()
}

func isConnRefused(err error) bool {
	return errors.Is(err, syscall.ECONNREFUSED)
}
