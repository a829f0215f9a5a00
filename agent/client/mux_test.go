package client

import (
	"context"
	"errors"
	"io"
	"log"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hyperhq/hyperd-go/agent"
	"github.com/hyperhq/hyperd-go/agent/mux"
	"github.com/hyperhq/hyperd-go/agent/protocol"
	"github.com/hyperhq/hyperd-go/sandbox"
	"golang.org/x/sys/unix"
)

// TestSerialTransport runs the real agent server on agent.SerialTransport
// over one end of a pty (a tty like a serial port, so raw mode matters:
// with the line discipline on, frames would be mangled) and the client
// over MuxDialer on the other end.
func TestSerialTransport(t *testing.T) {
	c := serialAgent(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	v, err := c.Version(ctx)
	if err != nil || v == "" {
		t.Fatalf("version %q %v", v, err)
	}
	for range 20 {
		if _, err := c.Ping(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// a stream connection with its own hello, refused with a typed error
	_, err = c.Commit(ctx, "nope")
	var perr *protocol.Error
	if !errors.As(err, &perr) || perr.Code != protocol.CodeNotFound {
		t.Errorf("commit of an unknown container: %v", err)
	}
	if _, err := c.Wait(ctx, "nope", ""); !errors.As(err, &perr) || perr.Code != protocol.CodeNotFound {
		t.Errorf("wait on an unknown container: %v", err)
	}
	var _ sandbox.Agent = c
}

func itoa(n int) string {
	b := []byte{}
	for {
		b = append([]byte{byte('0' + n%10)}, b...)
		n /= 10
		if n == 0 {
			return string(b)
		}
	}
}

// serialAgent runs the real agent server on agent.SerialTransport over the
// slave of a pty (a tty like a serial port, so raw mode matters: with the
// line discipline on, frames would be mangled) and returns a client on the
// master through MuxDialer.
func serialAgent(t testing.TB) *Client {
	t.Helper()
	ptm, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("open /dev/ptmx: %v", err)
	}
	if err := unix.IoctlSetPointerInt(int(ptm.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(ptm.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := agent.SerialTransport{Path: filepath.Join("/dev/pts", itoa(n))}.Listen()
	if err != nil {
		t.Fatal(err)
	}
	srv, err := agent.NewServer(agent.Config{StateDir: t.TempDir(), Self: "/nonexistent", Log: log.New(io.Discard, "", 0)})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	sess := mux.Client(ptm)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := New(ctx, MuxDialer(sess))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); sess.Close(); ln.Close() })
	return c
}

// BenchmarkPingSerial: a no-op round trip over the multiplexed tty.
func BenchmarkPingSerial(b *testing.B) {
	c := serialAgent(b)
	ctx := context.Background()
	for b.Loop() {
		if _, err := c.Ping(ctx); err != nil {
			b.Fatal(err)
		}
	}
}
