// This file owns UDP port mappings: one session per host peer, each with
// its own agent connection (the agent's "udp" connections keep datagram
// boundaries: one Write is one datagram), capped per mapping, dialled
// without holding up other peers, ended when idle; and the accept/read
// back-off that keeps a mapping alive through EMFILE and the like.

package pod

import (
	"context"
	"errors"
	"net"
	"sync"
	"time"
)

const (
	// maxUDPSessions caps the peers one UDP mapping serves at a time; a
	// datagram from a new peer beyond it is dropped (UDP may drop).
	maxUDPSessions = 1024
	// udpIdle ends a session with no datagram either way.
	udpIdle = 2 * time.Minute
	// udpQueue datagrams wait per peer while its session dials.
	udpQueue = 64
)

type udpSession struct {
	q chan []byte
}

func (f *forwarder) serveUDP(pc net.PacketConn, p PortPair) {
	limit := f.udpMax
	if limit <= 0 {
		limit = maxUDPSessions
	}
	var mu sync.Mutex
	sessions := map[string]*udpSession{}
	closed := make(chan struct{})
	defer close(closed)
	var back backoff
	var dropped int
	buf := make([]byte, 65536)
	for {
		n, peer, err := pc.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			f.log.Warn("port mapping: udp read", "host", p.Host, "err", err)
			back.wait()
			continue
		}
		back.reset()
		key := peer.String()
		mu.Lock()
		s := sessions[key]
		if s == nil {
			if len(sessions) >= limit {
				mu.Unlock()
				if dropped++; dropped%1000 == 1 {
					f.log.Warn("port mapping: udp peers at the cap; datagrams from new peers dropped", "host", p.Host, "cap", limit, "dropped", dropped)
				}
				continue
			}
			s = &udpSession{q: make(chan []byte, udpQueue)}
			sessions[key] = s
			go func() {
				f.udpSession(pc, p, peer, s, closed)
				mu.Lock()
				delete(sessions, key)
				mu.Unlock()
			}()
		}
		mu.Unlock()
		select {
		case s.q <- append([]byte(nil), buf[:n]...):
		default: // the peer's queue is full: drop, as a busy network would
		}
	}
}

// udpSession dials the container port for one peer, then forwards its
// datagrams both ways until the mapping closes or udpIdle passes quietly.
func (f *forwarder) udpSession(pc net.PacketConn, p PortPair, peer net.Addr, s *udpSession, closed <-chan struct{}) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	c, err := f.ag.Dial(ctx, "udp", p.Container)
	cancel()
	if err != nil {
		f.log.Warn("port mapping: dial container udp port", "host", p.Host, "container", p.Container, "err", err)
		return
	}
	defer c.Close()
	active := make(chan struct{}, 1)
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		b := make([]byte, 65536)
		for {
			n, err := c.Read(b)
			if err != nil {
				return
			}
			pc.WriteTo(b[:n], peer)
			select {
			case active <- struct{}{}:
			default:
			}
		}
	}()
	idle := time.NewTimer(udpIdle)
	defer idle.Stop()
	for {
		select {
		case d := <-s.q:
			if _, err := c.Write(d); err != nil {
				return
			}
		case <-active:
		case <-idle.C:
			return
		case <-closed:
			return
		case <-readerDone:
			return
		}
		idle.Reset(udpIdle) // go >= 1.23: no stale tick survives a Reset
	}
}

// backoff spaces out retries after an accept or read error: 5 ms doubling
// to 1 s, as net/http's Serve does.
type backoff struct{ d time.Duration }

func (b *backoff) wait() {
	if b.d == 0 {
		b.d = 5 * time.Millisecond
	} else if b.d *= 2; b.d > time.Second {
		b.d = time.Second
	}
	time.Sleep(b.d)
}

func (b *backoff) reset() { b.d = 0 }
