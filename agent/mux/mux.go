package mux

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"
)

// Frame header: stream id (4 bytes BE), type (1 byte), length (4 bytes BE).
// DATA is followed by length bytes (at most MaxData); WINDOW's length is a
// credit increment; OPEN, FIN and RST carry no payload (length 0).
const (
	headerLen = 9
	// MaxData is the largest DATA payload in one frame.
	MaxData = 32 << 10
	// Window is each stream's receive window: the most data a peer may send
	// that this side has not read yet.
	Window = 256 << 10
	// MaxStreams bounds the streams a peer may open at once.
	MaxStreams = 1024
)

const (
	typeOpen   byte = 1 // client opens stream id
	typeData   byte = 2
	typeWindow byte = 3 // receiver grants length more bytes
	typeFin    byte = 4 // sender will write no more (half-close)
	typeRst    byte = 5 // stream closed both ways
	typeReady  byte = 6 // server is up: stream 0, length readyMagic
)

// readyMagic is the length field of the server's READY frame ("hype"). The
// client discards whatever precedes the READY frame (boot messages on a
// shared port, line noise before the agent set raw mode).
const readyMagic = 0x68797065

// ErrClosed is returned by operations on a closed session or stream.
var ErrClosed = errors.New("mux: closed")

// Session is one end of a multiplexed byte stream. The client end opens
// streams (Open); the server end accepts them (Accept) and is a
// net.Listener.
type Session struct {
	rw     io.ReadWriteCloser
	server bool

	wmu sync.Mutex // frame writes

	mu      sync.Mutex
	streams map[uint32]*Stream
	nextID  uint32
	err     error
	closed  chan struct{}
	accept  chan *Stream
	ready   chan struct{} // client: the server's READY frame arrived
}

// Client starts the opening end of a session on rw.
func Client(rw io.ReadWriteCloser) *Session { return newSession(rw, false) }

// Server starts the accepting end of a session on rw.
func Server(rw io.ReadWriteCloser) *Session { return newSession(rw, true) }

func newSession(rw io.ReadWriteCloser, server bool) *Session {
	s := &Session{rw: rw, server: server, streams: map[uint32]*Stream{}, nextID: 1,
		closed: make(chan struct{}), accept: make(chan *Stream, 64), ready: make(chan struct{})}
	if server {
		close(s.ready)
		go s.write(0, typeReady, readyMagic, nil)
	}
	go s.readLoop()
	return s
}

// Ready is closed once the client end saw the server's READY frame (at
// once on the server end); Open waits for it.
func (s *Session) Ready() <-chan struct{} { return s.ready }

// Done is closed when the session ended; Err then says why.
func (s *Session) Done() <-chan struct{} { return s.closed }

// Err is why the session ended (nil while it runs).
func (s *Session) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

func (s *Session) fail(err error) {
	s.mu.Lock()
	if s.err != nil {
		s.mu.Unlock()
		return
	}
	s.err = err
	streams := s.streams
	s.streams = map[uint32]*Stream{}
	close(s.closed)
	s.mu.Unlock()
	s.rw.Close()
	for _, st := range streams {
		st.remoteGone(err)
	}
}

// Close ends the session and every stream.
func (s *Session) Close() error {
	s.fail(ErrClosed)
	return nil
}

// Addr implements net.Listener.
func (s *Session) Addr() net.Addr { return addr{} }

// Accept implements net.Listener (server end).
func (s *Session) Accept() (net.Conn, error) {
	if !s.server {
		return nil, errors.New("mux: Accept on the client end")
	}
	// a closed session accepts nothing, not even a stream that arrived
	// before it closed (select alone would pick either at random when both
	// are ready; the session's end closed that stream already)
	select {
	case <-s.closed:
		return nil, s.Err()
	default:
	}
	select {
	case st := <-s.accept:
		select {
		case <-s.closed:
			return nil, s.Err()
		default:
			return st, nil
		}
	case <-s.closed:
		return nil, s.Err()
	}
}

// Open opens a new stream (client end).
func (s *Session) Open() (net.Conn, error) {
	if s.server {
		return nil, errors.New("mux: Open on the server end")
	}
	select {
	case <-s.ready:
	case <-s.closed:
		return nil, s.Err()
	}
	s.mu.Lock()
	if s.err != nil {
		err := s.err
		s.mu.Unlock()
		return nil, err
	}
	if len(s.streams) >= MaxStreams {
		s.mu.Unlock()
		return nil, fmt.Errorf("mux: %d streams open", MaxStreams)
	}
	id := s.nextID
	s.nextID++
	st := newStream(s, id)
	s.streams[id] = st
	s.mu.Unlock()
	if err := s.write(id, typeOpen, 0, nil); err != nil {
		return nil, err
	}
	return st, nil
}

func (s *Session) write(id uint32, typ byte, n uint32, data []byte) error {
	var h [headerLen]byte
	binary.BigEndian.PutUint32(h[0:], id)
	h[4] = typ
	if data != nil {
		n = uint32(len(data))
	}
	binary.BigEndian.PutUint32(h[5:], n)
	s.wmu.Lock()
	defer s.wmu.Unlock()
	select {
	case <-s.closed:
		return s.Err()
	default:
	}
	_, err := s.rw.Write(append(h[:], data...))
	if err != nil {
		go s.fail(fmt.Errorf("mux: write: %w", err))
	}
	return err
}

// syncReady discards input up to and including the server's READY frame.
func (s *Session) syncReady() error {
	var want [headerLen]byte
	want[4] = typeReady
	binary.BigEndian.PutUint32(want[5:], readyMagic)
	var b [1]byte
	matched := 0
	for matched < headerLen {
		if _, err := io.ReadFull(s.rw, b[:]); err != nil {
			return fmt.Errorf("mux: waiting for the server: %w", err)
		}
		switch {
		case b[0] == want[matched]:
			matched++
		case b[0] == want[0]: // a zero may start the marker afresh
			if matched > 4 {
				matched = 1
			} else {
				// inside the leading zeros: stay (the marker starts with four)
				matched = min(matched, 4)
			}
		default:
			matched = 0
		}
	}
	close(s.ready)
	return nil
}

func (s *Session) readLoop() {
	if !s.server {
		if err := s.syncReady(); err != nil {
			s.fail(err)
			return
		}
	}
	var h [headerLen]byte
	buf := make([]byte, MaxData)
	for {
		if _, err := io.ReadFull(s.rw, h[:]); err != nil {
			s.fail(fmt.Errorf("mux: read: %w", err))
			return
		}
		id := binary.BigEndian.Uint32(h[0:])
		typ := h[4]
		n := binary.BigEndian.Uint32(h[5:])
		if err := s.frame(id, typ, n, buf); err != nil {
			s.fail(err)
			return
		}
	}
}

// frame handles one frame; an error is a protocol violation ending the
// session. The peer is untrusted: lengths are checked before reading.
func (s *Session) frame(id uint32, typ byte, n uint32, buf []byte) error {
	if typ == typeReady {
		return errors.New("mux: unexpected ready frame")
	}
	if typ != typeData && typ != typeWindow && n != 0 {
		return fmt.Errorf("mux: frame type %d with length %d", typ, n)
	}
	if typ == typeData && n > MaxData {
		return fmt.Errorf("mux: data frame of %d bytes (max %d)", n, MaxData)
	}
	var data []byte
	if typ == typeData {
		data = buf[:n]
		if _, err := io.ReadFull(s.rw, data); err != nil {
			return fmt.Errorf("mux: read: %w", err)
		}
	}
	s.mu.Lock()
	st := s.streams[id]
	if typ == typeOpen {
		if !s.server || id == 0 || st != nil {
			s.mu.Unlock()
			return fmt.Errorf("mux: unexpected open of stream %d", id)
		}
		if len(s.streams) >= MaxStreams {
			s.mu.Unlock()
			go s.write(id, typeRst, 0, nil)
			return nil
		}
		st = newStream(s, id)
		s.streams[id] = st
		s.mu.Unlock()
		select {
		case s.accept <- st:
		case <-s.closed:
		}
		return nil
	}
	s.mu.Unlock()
	if st == nil {
		return nil // a stream we already closed; late frames are harmless
	}
	switch typ {
	case typeData:
		return st.received(data)
	case typeWindow:
		st.credit(n)
	case typeFin:
		st.remoteFin()
	case typeRst:
		st.remoteGone(io.EOF)
		s.forget(id)
	default:
		return fmt.Errorf("mux: unknown frame type %d", typ)
	}
	return nil
}

func (s *Session) forget(id uint32) {
	s.mu.Lock()
	delete(s.streams, id)
	s.mu.Unlock()
}

type addr struct{}

func (addr) Network() string { return "mux" }
func (addr) String() string  { return "mux" }

// Stream is one multiplexed connection; it implements net.Conn and
// CloseWrite (half-close).
type Stream struct {
	s  *Session
	id uint32

	wmu      sync.Mutex // one Write at a time, so writes do not interleave
	mu       sync.Mutex
	notify   chan struct{} // wakes blocked readers and writers
	rbuf     []byte        // received, unread
	rfin     bool          // peer half-closed
	rerr     error         // stream reset / session gone
	wcredit  uint32        // bytes we may still send
	wclosed  bool          // we half-closed or closed
	closed   bool
	unacked  uint32 // bytes read but not yet granted back
	rdl, wdl time.Time
}

func newStream(s *Session, id uint32) *Stream {
	return &Stream{s: s, id: id, notify: make(chan struct{}), wcredit: Window}
}

// wake must be called with st.mu held.
func (st *Stream) wake() {
	close(st.notify)
	st.notify = make(chan struct{})
}

func (st *Stream) received(data []byte) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.rfin {
		return fmt.Errorf("mux: data on stream %d after its end", st.id)
	}
	if uint64(len(st.rbuf))+uint64(len(data))+uint64(st.unacked) > Window {
		return fmt.Errorf("mux: stream %d overran its window", st.id)
	}
	if st.closed {
		return nil
	}
	st.rbuf = append(st.rbuf, data...)
	st.wake()
	return nil
}

func (st *Stream) credit(n uint32) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if uint64(st.wcredit)+uint64(n) <= Window {
		st.wcredit += n
	}
	st.wake()
}

func (st *Stream) remoteFin() {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.rfin = true
	st.wake()
}

func (st *Stream) remoteGone(err error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.rfin = true
	if st.rerr == nil {
		st.rerr = err
	}
	st.wake()
}

// wait blocks until notified or the deadline dl passes; st.mu is held on
// entry and on return.
func (st *Stream) wait(dl time.Time) error {
	ch := st.notify
	st.mu.Unlock()
	var timeout <-chan time.Time
	if !dl.IsZero() {
		d := time.Until(dl)
		if d <= 0 {
			st.mu.Lock()
			return os.ErrDeadlineExceeded
		}
		t := time.NewTimer(d)
		defer t.Stop()
		timeout = t.C
	}
	var err error
	select {
	case <-ch:
	case <-timeout:
		err = os.ErrDeadlineExceeded
	}
	st.mu.Lock()
	return err
}

// Read implements net.Conn.
func (st *Stream) Read(p []byte) (int, error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	for len(st.rbuf) == 0 {
		if st.closed {
			return 0, ErrClosed
		}
		if st.rfin {
			if st.rerr != nil && st.rerr != io.EOF {
				return 0, st.rerr
			}
			return 0, io.EOF
		}
		if err := st.wait(st.rdl); err != nil {
			return 0, err
		}
	}
	n := copy(p, st.rbuf)
	st.rbuf = st.rbuf[n:]
	if len(st.rbuf) == 0 {
		st.rbuf = nil
	}
	st.unacked += uint32(n)
	if st.unacked >= Window/4 && !st.rfin {
		grant := st.unacked
		st.unacked = 0
		go st.s.write(st.id, typeWindow, grant, nil)
	}
	return n, nil
}

// Write implements net.Conn.
func (st *Stream) Write(p []byte) (int, error) {
	st.wmu.Lock()
	defer st.wmu.Unlock()
	st.mu.Lock()
	defer st.mu.Unlock()
	written := 0
	for len(p) > 0 {
		if st.wclosed || st.closed {
			return written, ErrClosed
		}
		if st.rerr != nil {
			return written, fmt.Errorf("mux: stream %d: %w", st.id, st.rerr)
		}
		if st.wcredit == 0 {
			if err := st.wait(st.wdl); err != nil {
				return written, err
			}
			continue
		}
		n := min(len(p), MaxData, int(st.wcredit))
		st.wcredit -= uint32(n)
		st.mu.Unlock()
		err := st.s.write(st.id, typeData, 0, p[:n])
		st.mu.Lock()
		if err != nil {
			return written, err
		}
		written += n
		p = p[n:]
	}
	return written, nil
}

// CloseWrite half-closes: the peer reads EOF after the data written so far.
func (st *Stream) CloseWrite() error {
	st.mu.Lock()
	if st.wclosed || st.closed {
		st.mu.Unlock()
		return nil
	}
	st.wclosed = true
	st.wake()
	st.mu.Unlock()
	return st.s.write(st.id, typeFin, 0, nil)
}

// Close implements net.Conn: the stream is gone both ways.
func (st *Stream) Close() error {
	st.mu.Lock()
	if st.closed {
		st.mu.Unlock()
		return nil
	}
	st.closed = true
	st.rbuf = nil
	st.wake()
	st.mu.Unlock()
	st.s.forget(st.id)
	err := st.s.write(st.id, typeRst, 0, nil)
	if errors.Is(err, ErrClosed) {
		return nil
	}
	return err
}

// LocalAddr implements net.Conn.
func (st *Stream) LocalAddr() net.Addr { return addr{} }

// RemoteAddr implements net.Conn.
func (st *Stream) RemoteAddr() net.Addr { return addr{} }

// SetDeadline implements net.Conn.
func (st *Stream) SetDeadline(t time.Time) error {
	st.mu.Lock()
	st.rdl, st.wdl = t, t
	st.wake()
	st.mu.Unlock()
	return nil
}

// SetReadDeadline implements net.Conn.
func (st *Stream) SetReadDeadline(t time.Time) error {
	st.mu.Lock()
	st.rdl = t
	st.wake()
	st.mu.Unlock()
	return nil
}

// SetWriteDeadline implements net.Conn.
func (st *Stream) SetWriteDeadline(t time.Time) error {
	st.mu.Lock()
	st.wdl = t
	st.wake()
	st.mu.Unlock()
	return nil
}
