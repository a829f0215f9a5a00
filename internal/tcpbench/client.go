// client.go owns the client side of the protocol: Client's Sink, Source
// and Ping, each on a connection of its own.
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

// Warmup is how many round trips Ping does before those it returns.
const Warmup = 10

// Client measures against a server of this protocol.
type Client struct {
	Addr string // host:port
	// DialFor is how long each measurement retries connecting (the
	// server may not listen yet, a link may have just come up); 0: once.
	DialFor time.Duration
}

// dial connects, retrying every 200 ms for c.DialFor.
func (c Client) dial() (*net.TCPConn, error) {
	deadline := time.Now().Add(c.DialFor)
	for {
		conn, err := net.DialTimeout("tcp", c.Addr, 5*time.Second)
		if err == nil {
			return conn.(*net.TCPConn), nil
		}
		if time.Now().After(deadline) {
			return nil, err
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// Sink sends n bytes to the server (SINK). It returns the time from the
// command to the server's answer, and the server's own time.
func (c Client) Sink(n int64) (client, server time.Duration, err error) {
	conn, err := c.dial()
	if err != nil {
		return 0, 0, err
	}
	defer conn.Close()
	buf := pattern(64 << 10)
	t0 := time.Now()
	if _, err := fmt.Fprintf(conn, "SINK %d\n", n); err != nil {
		return 0, 0, fmt.Errorf("SINK: %w", err)
	}
	for left := n; left > 0; {
		k, err := conn.Write(buf[:min(left, int64(len(buf)))])
		if err != nil {
			return 0, 0, fmt.Errorf("SINK: %w", err)
		}
		left -= int64(k)
	}
	server, err = okLine(bufio.NewReader(conn))
	return time.Since(t0), server, err
}

// Source receives n bytes from the server (SOURCE). It returns the time
// from the command to the last byte, and the server's own time.
func (c Client) Source(n int64) (client, server time.Duration, err error) {
	conn, err := c.dial()
	if err != nil {
		return 0, 0, err
	}
	defer conn.Close()
	r := bufio.NewReaderSize(conn, 256<<10)
	t0 := time.Now()
	if _, err := fmt.Fprintf(conn, "SOURCE %d\n", n); err != nil {
		return 0, 0, fmt.Errorf("SOURCE: %w", err)
	}
	if got, err := io.CopyN(io.Discard, r, n); err != nil {
		return 0, 0, fmt.Errorf("SOURCE: received %d of %d bytes: %w", got, n, err)
	}
	client = time.Since(t0)
	if _, err := io.WriteString(conn, "DONE\n"); err != nil {
		return 0, 0, fmt.Errorf("SOURCE: %w", err)
	}
	server, err = okLine(r)
	return client, server, err
}

// Ping does Warmup+k one-byte round trips (ECHO) and returns the times of
// the last k.
func (c Client) Ping(k int) ([]time.Duration, error) {
	conn, err := c.dial()
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	conn.SetNoDelay(true)
	if _, err := io.WriteString(conn, "ECHO\n"); err != nil {
		return nil, fmt.Errorf("ECHO: %w", err)
	}
	b := []byte{'p'}
	var rtts []time.Duration
	for i := 0; i < Warmup+k; i++ {
		t0 := time.Now()
		if _, err := conn.Write(b); err != nil {
			return nil, fmt.Errorf("ping %d: %w", i, err)
		}
		if _, err := io.ReadFull(conn, b); err != nil {
			return nil, fmt.Errorf("pong %d: %w", i, err)
		}
		if i >= Warmup {
			rtts = append(rtts, time.Since(t0))
		}
	}
	return rtts, nil
}

// okLine reads the server's "OK <ns>" answer.
func okLine(r *bufio.Reader) (time.Duration, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return 0, fmt.Errorf("the server's answer: %q %w", line, err)
	}
	ns, ok := strings.CutPrefix(strings.TrimSpace(line), "OK ")
	if !ok {
		return 0, fmt.Errorf("the server answered %q", line)
	}
	n, err := strconv.ParseInt(ns, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("the server answered %q", line)
	}
	return time.Duration(n), nil
}
