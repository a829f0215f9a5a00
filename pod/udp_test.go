package pod

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hyperhq/hyperd-go/sandbox"
)

// echoAgent answers Dial with an in-memory echo ("echo:" + datagram);
// block, while open, holds the first Dial.
type echoAgent struct {
	sandbox.Agent
	dials atomic.Int32
	block chan struct{}
}

func (a *echoAgent) Dial(ctx context.Context, network string, port int) (net.Conn, error) {
	if a.dials.Add(1) == 1 && a.block != nil {
		select {
		case <-a.block:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	x, y := net.Pipe()
	go func() {
		defer y.Close()
		b := make([]byte, 65536)
		for {
			n, err := y.Read(b)
			if err != nil {
				return
			}
			if _, err := y.Write(append([]byte("echo:"), b[:n]...)); err != nil {
				return
			}
		}
	}()
	return x, nil
}

// flakyPC fails its first reads with EMFILE, as a host out of fds would.
type flakyPC struct {
	net.PacketConn
	fails atomic.Int32
}

func (f *flakyPC) ReadFrom(b []byte) (int, net.Addr, error) {
	if f.fails.Add(-1) >= 0 {
		return 0, nil, &net.OpError{Op: "read", Net: "udp", Err: syscall.EMFILE}
	}
	return f.PacketConn.ReadFrom(b)
}

func ask(t *testing.T, addr net.Addr, msg string, wait time.Duration) (string, error) {
	t.Helper()
	c, err := net.Dial("udp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte(msg))
	c.SetReadDeadline(time.Now().Add(wait))
	b := make([]byte, 2048)
	n, err := c.Read(b)
	return string(b[:n]), err
}

// TestUDPMapping: a UDP mapping survives read errors (EMFILE once killed
// it silently), a peer whose session is still dialling does not hold up
// the others (the dial once ran in the read loop), and the peers of one
// mapping are capped.
func TestUDPMapping(t *testing.T) {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	serve := func(t *testing.T, ag sandbox.Agent, max int, fails int32) net.Addr {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		fpc := &flakyPC{PacketConn: pc}
		fpc.fails.Store(fails)
		f := &forwarder{ag: ag, log: quiet, udpMax: max}
		go f.serveUDP(fpc, PortPair{Proto: "udp", Host: 1, Container: 53})
		t.Cleanup(func() { pc.Close() })
		return pc.LocalAddr()
	}
	t.Run("read errors", func(t *testing.T) {
		addr := serve(t, &echoAgent{}, 0, 3)
		if got, err := ask(t, addr, "a", 5*time.Second); err != nil || got != "echo:a" {
			t.Fatalf("after EMFILE: %q %v", got, err)
		}
	})
	t.Run("a slow dial holds up no one", func(t *testing.T) {
		ag := &echoAgent{block: make(chan struct{})}
		defer close(ag.block)
		addr := serve(t, ag, 0, 0)
		slow, _ := net.Dial("udp", addr.String())
		defer slow.Close()
		slow.Write([]byte("first"))
		for ag.dials.Load() == 0 {
			time.Sleep(time.Millisecond)
		}
		if got, err := ask(t, addr, "b", 5*time.Second); err != nil || got != "echo:b" {
			t.Fatalf("second peer while the first dials: %q %v", got, err)
		}
	})
	t.Run("peers capped", func(t *testing.T) {
		addr := serve(t, &echoAgent{}, 2, 0)
		var conns []net.Conn
		for i := 0; i < 2; i++ {
			c, _ := net.Dial("udp", addr.String())
			defer c.Close()
			c.Write([]byte("x"))
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := c.Read(make([]byte, 64)); err != nil {
				t.Fatalf("peer %d: %v", i, err)
			}
			conns = append(conns, c)
		}
		_, err := ask(t, addr, "third", 300*time.Millisecond)
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("a third peer over the cap of 2: %v, want no answer", err)
		}
		// the sessions within the cap still work
		conns[0].Write([]byte("y"))
		b := make([]byte, 64)
		conns[0].SetReadDeadline(time.Now().Add(5 * time.Second))
		if n, err := conns[0].Read(b); err != nil || string(b[:n]) != "echo:y" {
			t.Fatalf("first peer after the cap: %q %v", b[:n], err)
		}
	})
}
