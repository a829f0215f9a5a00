// server.go owns the server side of the protocol: Serve and Handle.
package tcpbench

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"
)

// Result is what the server measured on one connection.
type Result struct {
	Cmd   string        // SINK, SOURCE or ECHO
	Bytes int64         // SINK, SOURCE: the n of the command
	Time  time.Duration // SINK: first byte to last; SOURCE: first write to DONE
	// RTTs are ECHO's round trips as the server sees them: from each
	// pong's write to the next ping's arrival (one fewer than the pings,
	// the client's warm-up ones included).
	RTTs []time.Duration
}

// Server serves the protocol.
type Server struct {
	// Timeout bounds each connection (0: no bound).
	Timeout time.Duration
	// Report, if not nil, gets each connection's result, or its error.
	// It is called from the connection's goroutine.
	Report func(Result, error)
}

// Serve handles each connection ln accepts, each in its own goroutine,
// until Accept fails (ln closed); it returns that error.
func (s *Server) Serve(ln net.Listener) error {
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go func() {
			defer c.Close()
			if s.Timeout > 0 {
				c.SetDeadline(time.Now().Add(s.Timeout))
			}
			r, err := Handle(c)
			if s.Report != nil {
				s.Report(r, err)
			}
		}()
	}
}

// Handle serves one connection: it reads the command and carries it out.
// It does not close c.
func Handle(c net.Conn) (Result, error) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
	}
	r := bufio.NewReaderSize(c, 256<<10)
	line, err := r.ReadString('\n')
	if err != nil {
		return Result{}, fmt.Errorf("command: %q %w", line, err)
	}
	cmd, arg, _ := strings.Cut(strings.TrimSpace(line), " ")
	res := Result{Cmd: cmd}
	if cmd == "SINK" || cmd == "SOURCE" {
		if res.Bytes, err = strconv.ParseInt(arg, 10, 64); err != nil || res.Bytes <= 0 {
			return res, fmt.Errorf("%s: byte count %q", cmd, arg)
		}
	}
	switch cmd {
	case "SINK":
		if _, err := r.ReadByte(); err != nil {
			return res, fmt.Errorf("SINK: %w", err)
		}
		t0 := time.Now()
		if got, err := io.CopyN(io.Discard, r, res.Bytes-1); err != nil {
			return res, fmt.Errorf("SINK: %d of %d bytes: %w", got+1, res.Bytes, err)
		}
		res.Time = time.Since(t0)
		_, err := fmt.Fprintf(c, "OK %d\n", res.Time.Nanoseconds())
		return res, err
	case "SOURCE":
		buf := pattern(64 << 10)
		t0 := time.Now()
		for left := res.Bytes; left > 0; {
			k, err := c.Write(buf[:min(left, int64(len(buf)))])
			if err != nil {
				return res, fmt.Errorf("SOURCE: %w", err)
			}
			left -= int64(k)
		}
		if done, err := r.ReadString('\n'); err != nil || done != "DONE\n" {
			return res, fmt.Errorf("SOURCE: the client's DONE: %q %v", done, err)
		}
		res.Time = time.Since(t0)
		_, err := fmt.Fprintf(c, "OK %d\n", res.Time.Nanoseconds())
		return res, err
	case "ECHO":
		var sent time.Time
		b := []byte{0}
		for {
			if _, err := io.ReadFull(r, b); err != nil {
				return res, nil // the client's EOF ends it
			}
			if !sent.IsZero() {
				res.RTTs = append(res.RTTs, time.Since(sent))
			}
			if _, err := c.Write(b); err != nil {
				return res, fmt.Errorf("ECHO: %w", err)
			}
			sent = time.Now()
		}
	}
	return res, fmt.Errorf("unknown command %q", line)
}

// pattern is n bytes of a counting pattern (what both ends send).
func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i)
	}
	return b
}
