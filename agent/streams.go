// This file owns the agent's stream connections (every connection but the
// control one): attaching to a process's stdio, its output from the first
// byte, and its log records.

package agent

import (
	"fmt"
	"io"
	"net"
	"path/filepath"
	"sync"
	"time"

	"github.com/hyperhq/hyperd-go/agent/protocol"
)

// stream serves a non-control connection.
func (s *Server) stream(c net.Conn, h protocol.Hello) {
	fail := func(perr *protocol.Error) {
		protocol.WriteJSON(c, protocol.HelloReply{Version: protocol.Version, Error: perr})
		c.Close()
	}
	// accept answers the hello; false if that failed (c is closed then).
	accept := func(tty bool) bool {
		if protocol.WriteJSON(c, protocol.HelloReply{Version: protocol.Version, Agent: AgentVersion, Tty: tty}) != nil {
			c.Close()
			return false
		}
		return true
	}
	if h.Kind == protocol.KindDial {
		if h.Network != "tcp" && h.Network != "udp" || h.Port <= 0 || h.Port > 65535 {
			fail(protocol.Errorf(protocol.CodeBadRequest, "bad dial %s/%d", h.Network, h.Port))
			return
		}
		t, err := net.DialTimeout(h.Network, net.JoinHostPort("127.0.0.1", fmt.Sprint(h.Port)), 10*time.Second)
		if err != nil {
			fail(protocol.Errorf(protocol.CodeNotFound, "%v", err))
			return
		}
		if !accept(false) {
			t.Close()
			return
		}
		if h.Network == "udp" {
			spliceUDP(c, t) // datagram boundaries kept (PROTOCOL.md)
		} else {
			splice(c, t)
		}
		return
	}
	ctr, perr := s.get(h.Container)
	if perr != nil {
		fail(perr)
		return
	}
	switch h.Kind {
	case protocol.KindCommit:
		if !accept(false) {
			return
		}
		if err := writeLayer(c, ctr.upper); err != nil {
			s.cfg.Log.Printf("commit %s: %v", ctr.id, err)
			c.Close() // an incomplete tar: the client sees a truncated archive
			return
		}
		closeWrite(c)
		c.Close()
	case protocol.KindLogs:
		p, perr := ctr.proc("")
		if perr != nil {
			fail(perr)
			return
		}
		opt := protocol.LogOptions{Stdout: true, Stderr: true, Tail: -1}
		if h.Logs != nil {
			opt = *h.Logs
		}
		if !accept(false) {
			return
		}
		s.serveLogs(c, p, opt)
	case protocol.KindStdin, protocol.KindStdout, protocol.KindStderr:
		p, perr := ctr.proc(h.Exec)
		if perr != nil {
			fail(perr)
			return
		}
		if h.Kind == protocol.KindStdin {
			if !p.spec.OpenStdin {
				fail(protocol.Errorf(protocol.CodeConflict, "process was not created with stdin open"))
				return
			}
			if !accept(false) {
				return
			}
			p.feedStdin(c)
			return
		}
		if h.Kind == protocol.KindStderr && p.spec.Tty {
			fail(protocol.Errorf(protocol.CodeConflict, "tty process has no stderr"))
			return
		}
		if !accept(p.spec.Tty) {
			return
		}
		want := byte(streamStdout)
		if h.Kind == protocol.KindStderr {
			want = streamStderr
		}
		s.serveOutput(c, p, want)
	}
}

// serveOutput copies one stream of a process from its first byte.
func (s *Server) serveOutput(c net.Conn, p *process, want byte) {
	serveRecords(c, p, true, nil, func(rec record) error {
		if rec.stream != want {
			return nil
		}
		_, err := c.Write(rec.data)
		return err
	})
}

// serveLogs sends the log records opt asks for, as protocol.LogRecords.
func (s *Server) serveLogs(c net.Conn, p *process, opt protocol.LogOptions) {
	streams := map[byte]bool{streamStdout: opt.Stdout, streamStderr: opt.Stderr}
	serveRecords(c, p, opt.Follow, func(r *outReader) {
		r.off = p.out.startOffset(r.f, opt.Tail, opt.Since, streams)
	}, func(rec record) error {
		if !streams[rec.stream] {
			return nil
		}
		name := "stdout"
		if rec.stream == streamStderr {
			name = "stderr"
		}
		return protocol.WriteJSON(c, protocol.LogRecord{Stream: name, Time: rec.time, Data: rec.data})
	})
}

// serveRecords hands a process's output records to send (from where start
// puts the reader, if given; following the output while it runs if
// follow), until the output ends (then c is half-closed), send fails or
// the client goes away; c is closed at the end.
func serveRecords(c net.Conn, p *process, follow bool, start func(*outReader), send func(record) error) {
	defer c.Close()
	done := make(chan struct{})
	go func() { // notice the client going away
		io.Copy(io.Discard, c)
		close(done)
	}()
	r, err := p.out.open(follow, done)
	if err != nil {
		return
	}
	defer r.close()
	if start != nil {
		start(r)
	}
	for {
		rec, err := r.next()
		if err != nil {
			break
		}
		if send(rec) != nil {
			return
		}
	}
	closeWrite(c)
}

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
}

func splice(a, b net.Conn) {
	var wg sync.WaitGroup
	wg.Add(2)
	cp := func(dst, src net.Conn) {
		defer wg.Done()
		io.Copy(dst, src)
		closeWrite(dst)
	}
	go cp(a, b)
	go cp(b, a)
	wg.Wait()
	a.Close()
	b.Close()
}

// statePath joins under the state dir.
func (s *Server) statePath(p ...string) string {
	return filepath.Join(append([]string{s.cfg.StateDir}, p...)...)
}
