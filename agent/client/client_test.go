package client

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/hyperhq/hyperd-go/agent/protocol"
)

// fakeAgent answers the hello, then hands requests to serve.
func fakeAgent(t *testing.T, serve func(c net.Conn)) Dialer {
	return func(ctx context.Context) (net.Conn, error) {
		a, b := net.Pipe()
		go func() {
			var h protocol.Hello
			if err := protocol.ReadJSON(b, &h); err != nil {
				return
			}
			protocol.WriteJSON(b, protocol.HelloReply{Version: protocol.Version, Agent: "fake"})
			serve(b)
		}()
		return a, nil
	}
}

func TestOutOfOrderAndErrors(t *testing.T) {
	dial := fakeAgent(t, func(c net.Conn) {
		var r1, r2 protocol.Request
		protocol.ReadJSON(c, &r1)
		protocol.ReadJSON(c, &r2)
		// answer the second first, the first with a typed error
		protocol.WriteJSON(c, protocol.Response{ID: r2.ID, Result: []byte(`{"protocol":1,"agent":"fake"}`)})
		protocol.WriteJSON(c, protocol.Response{ID: r1.ID, Error: &protocol.Error{Code: protocol.CodeNotFound, Message: "no such container: x"}})
		c.Close()
	})
	c, err := New(context.Background(), dial)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	errc := make(chan error, 1)
	go func() { errc <- c.StartContainer(context.Background(), "x") }()
	time.Sleep(20 * time.Millisecond)
	v, err := c.Version(context.Background())
	if err != nil || v != "fake (protocol 1)" {
		t.Fatalf("version %q %v", v, err)
	}
	err = <-errc
	var pe *protocol.Error
	if !errors.As(err, &pe) || pe.Code != protocol.CodeNotFound {
		t.Fatalf("start: %v", err)
	}
	<-c.Done()
	if _, err := c.Ping(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("ping after close: %v", err)
	}
}

func TestContextCancel(t *testing.T) {
	dial := fakeAgent(t, func(c net.Conn) {
		var r protocol.Request
		protocol.ReadJSON(c, &r) // never answered
		protocol.ReadJSON(c, &r)
		protocol.WriteJSON(c, protocol.Response{ID: r.ID, Result: []byte(`{}`)})
		select {}
	})
	c, err := New(context.Background(), dial)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := c.Wait(ctx, "c", ""); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("wait: %v", err)
	}
	if _, err := c.Ping(context.Background()); err != nil {
		t.Fatalf("ping after a cancelled call: %v", err)
	}
}

func TestHelloRefused(t *testing.T) {
	dial := func(ctx context.Context) (net.Conn, error) {
		a, b := net.Pipe()
		go func() {
			var h protocol.Hello
			protocol.ReadJSON(b, &h)
			protocol.WriteJSON(b, protocol.HelloReply{Version: protocol.Version, Error: &protocol.Error{Code: protocol.CodeVersion, Message: "no"}})
			b.Close()
		}()
		return a, nil
	}
	if _, err := New(context.Background(), dial); err == nil {
		t.Fatal("refused hello accepted")
	}
	// a hung agent: the context bounds the hello
	hung := func(ctx context.Context) (net.Conn, error) { a, _ := net.Pipe(); return a, nil }
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := New(ctx, hung); err == nil {
		t.Fatal("hello to a hung agent succeeded")
	}
}

func TestNewConn(t *testing.T) {
	served := make(chan struct{})
	dial := fakeAgent(t, func(c net.Conn) {
		var r protocol.Request
		protocol.ReadJSON(c, &r)
		protocol.WriteJSON(c, protocol.Response{ID: r.ID, Result: []byte(`{}`)})
		close(served)
	})
	conn, err := dial(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	noDial := func(context.Context) (net.Conn, error) { return nil, errors.New("no streams here") }
	c, err := NewConn(context.Background(), conn, noDial)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Ping(context.Background()); err != nil {
		t.Fatal(err)
	}
	<-served
	if _, err := c.Dial(context.Background(), "tcp", 80); err == nil {
		t.Fatal("stream without a dialer succeeded")
	}
}
