package client

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/hyperhq/hyperd-go/agent"
	"github.com/hyperhq/hyperd-go/agent/protocol"
)

// realAgent serves the agent in this process on a unix socket.
func realAgent(t *testing.T) *Client {
	t.Helper()
	dir := t.TempDir()
	srv, err := agent.NewServer(agent.Config{StateDir: filepath.Join(dir, "state"), Self: "/nonexistent", Log: log.New(io.Discard, "", 0)})
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "agent.sock")
	ln, err := agent.UnixTransport{Path: sock}.Listen()
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { ln.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := New(ctx, UnixDialer(sock))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestDialUDP: datagram boundaries survive the stream both ways, including
// an empty datagram and one of the largest size.
func TestDialUDP(t *testing.T) {
	c := realAgent(t)
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	go func() { // echo server: prefixes each datagram with '>'
		buf := make([]byte, protocol.MaxDatagram+1)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(append([]byte(">"), buf[:n]...), from)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := c.Dial(ctx, "udp", pc.LocalAddr().(*net.UDPAddr).Port)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	for _, msg := range [][]byte{[]byte("one"), []byte("two two"), {}, bytes.Repeat([]byte("x"), 60000)} {
		if _, err := conn.Write(msg); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, protocol.MaxDatagram)
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		if want := append([]byte(">"), msg...); !bytes.Equal(buf[:n], want) {
			t.Fatalf("datagram of %d bytes came back as %d bytes", len(want), n)
		}
	}
	if _, err := conn.Write(make([]byte, protocol.MaxDatagram+1)); err == nil {
		t.Error("oversized datagram accepted")
	}
}

func TestDialTCPAndErrors(t *testing.T) {
	c := realAgent(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		s, err := ln.Accept()
		if err != nil {
			return
		}
		io.Copy(s, s)
		s.Close()
	}()
	port := ln.Addr().(*net.TCPAddr).Port
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := c.Dial(ctx, "tcp", port)
	if err != nil {
		t.Fatal(err)
	}
	conn.Write([]byte("hello"))
	conn.(interface{ CloseWrite() error }).CloseWrite()
	if b, err := io.ReadAll(conn); err != nil || string(b) != "hello" {
		t.Errorf("tcp echo %q %v", b, err)
	}
	conn.Close()
	ln.Close()
	for _, tc := range []struct {
		network string
		port    int
		code    string
	}{
		{"tcp", port, protocol.CodeNotFound}, // nothing listens any more
		{"sctp", 80, protocol.CodeBadRequest},
		{"tcp", 0, protocol.CodeBadRequest},
		{"udp", 70000, protocol.CodeBadRequest},
	} {
		_, err := c.Dial(ctx, tc.network, tc.port)
		var perr *protocol.Error
		if !errors.As(err, &perr) || perr.Code != tc.code {
			t.Errorf("dial %s/%d: %v, want code %s", tc.network, tc.port, err, tc.code)
		}
	}
}
