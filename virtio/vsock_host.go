// This file owns the host side of the socket device's connections: the
// goroutines that move bytes between a connection and its unix socket, and
// host-initiated connections ("CONNECT <port>" on the listening socket, as
// Firecracker's hybrid vsock).

package virtio

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"
)

// readLoop moves host data towards the guest, one buffer at a time.
func (v *Vsock) readLoop(c *vconn) {
	defer v.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := c.src.Read(buf)
		v.mu.Lock()
		if c.closed {
			v.mu.Unlock()
			return
		}
		if n > 0 && !c.guestNoRecv {
			c.rdData = buf[:n]
			v.markReady(c)
			v.processRx()
			for len(c.rdData) > 0 && !c.closed {
				c.cond.Wait()
			}
			if c.closed {
				v.mu.Unlock()
				return
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				c.rdEOF = true
				v.markReady(c)
			} else {
				v.closeConn(c, true)
			}
			v.processRx()
			v.mu.Unlock()
			return
		}
		v.mu.Unlock()
	}
}

// writeLoop moves guest data to the host socket and returns credit. A
// connection closed while data was pending (closeConn's drain) is written
// out before its socket is closed.
func (v *Vsock) writeLoop(c *vconn) {
	defer v.wg.Done()
	v.mu.Lock()
	defer v.mu.Unlock()
	for {
		for !c.closed && len(c.preamble) == 0 && len(c.txBuf) == 0 && !(c.guestNoSend && (!c.wroteEOF || c.guestNoRecv)) {
			c.cond.Wait()
		}
		if c.closed {
			if c.drain {
				v.drainConn(c)
			}
			return
		}
		if len(c.preamble) == 0 && len(c.txBuf) == 0 {
			// Guest will send no more and everything is written.
			if c.guestNoRecv {
				// Full shutdown: finish with a RST (§5.10.6 "Stream Sockets").
				v.closeConn(c, true)
				v.processRx()
				return
			}
			c.wroteEOF = true
			if cw, ok := c.uc.(interface{ CloseWrite() error }); ok {
				cw.CloseWrite()
			}
			continue
		}
		pre, data := c.preamble, c.txBuf
		c.preamble, c.txBuf = nil, nil
		uc := c.uc
		c.writing = true
		v.mu.Unlock()
		err := writeGuestData(uc, pre, data)
		v.mu.Lock()
		c.writing = false
		if c.closed {
			if c.drain && err == nil {
				v.drainConn(c)
			} else {
				uc.Close()
			}
			return
		}
		if err != nil {
			v.closeConn(c, true)
			v.processRx()
			return
		}
		c.fwdCnt += uint32(len(data))
		if c.fwdCnt-c.lastFwdSent >= vsockBufAlloc/2 {
			v.send(c, VsockOpCreditUpdate, 0)
			v.processRx()
		}
	}
}

// vsockDrainTimeout bounds writing out a closed connection's last guest
// data to a host socket that is not being read.
const vsockDrainTimeout = 2 * time.Second

// drainConn writes what is left of a closed connection's guest data and
// closes its host socket. Called with v.mu held; it releases it while
// writing (no one else touches a closed connection's buffers).
func (v *Vsock) drainConn(c *vconn) {
	pre, data, uc := c.preamble, c.txBuf, c.uc
	c.preamble, c.txBuf, c.drain = nil, nil, false
	v.mu.Unlock()
	uc.SetWriteDeadline(time.Now().Add(vsockDrainTimeout))
	writeGuestData(uc, pre, data)
	uc.Close()
	v.mu.Lock()
}

// writeGuestData writes a connection's preamble, then guest data, to its
// host socket.
func writeGuestData(uc net.Conn, pre, data []byte) error {
	_, err := uc.Write(pre)
	if err == nil && len(data) > 0 {
		_, err = uc.Write(data)
	}
	return err
}

func (v *Vsock) acceptLoop() {
	defer v.wg.Done()
	for {
		uc, err := v.ln.Accept()
		if err != nil {
			return
		}
		v.mu.Lock()
		if v.closed {
			v.mu.Unlock()
			uc.Close()
			return
		}
		v.pending[uc] = true
		v.mu.Unlock()
		v.wg.Add(1)
		go v.hostConnect(uc)
	}
}

// hostConnect reads "CONNECT <port>\n" and asks the guest to accept.
func (v *Vsock) hostConnect(uc net.Conn) {
	defer v.wg.Done()
	uc.SetDeadline(time.Now().Add(v.cfg.ConnectTimeout))
	br := bufio.NewReaderSize(uc, 64)
	port, err := readConnectLine(br)
	if err != nil {
		v.logf("host connection: %v", err)
		v.mu.Lock()
		delete(v.pending, uc)
		v.mu.Unlock()
		uc.Close()
		return
	}
	uc.SetDeadline(time.Time{})
	v.mu.Lock()
	defer v.mu.Unlock()
	delete(v.pending, uc)
	if v.closed || len(v.conns) >= vsockMaxConns {
		uc.Close()
		return
	}
	local := v.nextPort
	for v.conns[connKey{local, port}] != nil {
		local++
	}
	v.nextPort = local + 1
	if v.nextPort < vsockFirstHostPort {
		v.nextPort = vsockFirstHostPort
	}
	c := v.newConn(connKey{local, port}, stConnecting)
	c.uc, c.src = uc, br
	c.timer = time.AfterFunc(v.cfg.ConnectTimeout, func() {
		v.mu.Lock()
		defer v.mu.Unlock()
		if !c.closed && c.state == stConnecting {
			v.logf("guest did not answer CONNECT %d", port)
			v.closeConn(c, true)
			v.processRx()
		}
	})
	v.send(c, VsockOpRequest, 0)
	v.processRx()
}

// readConnectLine parses "CONNECT <port>\n" without reading past it.
func readConnectLine(br *bufio.Reader) (uint32, error) {
	var line []byte
	for {
		b, err := br.ReadByte()
		if err != nil {
			return 0, err
		}
		if b == '\n' {
			break
		}
		line = append(line, b)
		if len(line) > 32 {
			return 0, errors.New("CONNECT line too long")
		}
	}
	s := strings.TrimSuffix(string(line), "\r")
	f := strings.Fields(s)
	if len(f) != 2 || f[0] != "CONNECT" {
		return 0, fmt.Errorf("bad request %q", s)
	}
	p, err := strconv.ParseUint(f[1], 10, 32)
	if err != nil {
		return 0, fmt.Errorf("bad port %q", f[1])
	}
	return uint32(p), nil
}
