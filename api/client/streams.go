package client

// streams.go owns the hijacked attach and exec streams (Stream), tty
// resize and the demultiplexing of Docker's stdout/stderr frames.

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
)

// Stream is a hijacked attach or exec connection.
type Stream struct {
	Conn   net.Conn
	Reader *bufio.Reader
	Status int
}

// Hijack posts path and upgrades the connection (101 UPGRADED).
func (c *Client) Hijack(ctx context.Context, path string, q url.Values) (*Stream, error) {
	conn, err := c.dial(ctx)
	if err != nil {
		return nil, fmt.Errorf("cannot reach hyperd at %s://%s: %w", c.network, c.addr, err)
	}
	req, _ := http.NewRequest("POST", c.url(path, q), nil)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "tcp")
	req.Header.Set("Content-Type", "text/plain")
	if err := req.Write(conn); err != nil {
		conn.Close()
		return nil, err
	}
	br := bufio.NewReader(conn)
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	resp, err := http.ReadResponse(br, req)
	stop()
	if err != nil {
		conn.Close()
		return nil, err
	}
	if resp.StatusCode != 101 && resp.StatusCode != 200 {
		defer conn.Close()
		return nil, errorOf(resp)
	}
	return &Stream{Conn: conn, Reader: br, Status: resp.StatusCode}, nil
}

// Pump copies stdin to the stream (half-closing at EOF) and the output to
// stdout/stderr (demuxed unless tty) until the daemon closes the stream.
func (s *Stream) Pump(tty bool, stdin io.Reader, stdout, stderr io.Writer) error {
	defer s.Conn.Close()
	if stdin != nil {
		go func() {
			io.Copy(s.Conn, stdin)
			if cw, ok := s.Conn.(interface{ CloseWrite() error }); ok {
				cw.CloseWrite()
			}
		}()
	} else if cw, ok := s.Conn.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	if tty {
		_, err := io.Copy(stdout, s.Reader)
		if err != nil && errors.Is(err, net.ErrClosed) {
			return nil
		}
		return err
	}
	return Demux(s.Reader, stdout, stderr)
}

// Attach opens a container's stdio stream.
func (c *Client) Attach(ctx context.Context, container string, stdin bool) (*Stream, error) {
	q := url.Values{"type": {"container"}, "value": {container}, "container": {container}, "stdin": {strconv.FormatBool(stdin)}}
	return c.Hijack(ctx, "/attach", q)
}

// ExecStart starts an exec and opens its stream.
func (c *Client) ExecStart(ctx context.Context, container, exec string) (*Stream, error) {
	return c.Hijack(ctx, "/exec/start", url.Values{"container": {container}, "exec": {exec}})
}

// Resize changes a tty's size.
func (c *Client) Resize(ctx context.Context, container, exec string, w, h int) error {
	q := cq(container)
	if exec != "" {
		q.Set("exec", exec)
	}
	q.Set("w", strconv.Itoa(w))
	q.Set("h", strconv.Itoa(h))
	return c.call(ctx, "POST", "/tty/resize", q, nil, nil)
}

// Demux splits Docker's 8-byte-framed stream.
func Demux(r io.Reader, stdout, stderr io.Writer) error {
	var h [8]byte
	for {
		if _, err := io.ReadFull(r, h[:]); err != nil {
			if err == io.EOF || err == io.ErrUnexpectedEOF {
				return nil
			}
			return err
		}
		n := int64(binary.BigEndian.Uint32(h[4:]))
		w := stdout
		if h[0] == 2 {
			w = stderr
		}
		if w == nil {
			w = io.Discard
		}
		if _, err := io.CopyN(w, r, n); err != nil {
			return err
		}
	}
}
