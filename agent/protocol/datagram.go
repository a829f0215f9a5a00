package protocol

import (
	"encoding/binary"
	"fmt"
	"io"
)

// MaxDatagram is the largest UDP payload a dial stream carries.
const MaxDatagram = 65535

// A udp dial stream keeps datagram boundaries: each datagram travels as a
// 2-byte big-endian length followed by that many bytes, both ways.

// WriteDatagram writes one framed datagram.
func WriteDatagram(w io.Writer, p []byte) error {
	if len(p) > MaxDatagram {
		return fmt.Errorf("protocol: datagram of %d bytes (max %d)", len(p), MaxDatagram)
	}
	b := make([]byte, 2+len(p))
	binary.BigEndian.PutUint16(b, uint16(len(p)))
	copy(b[2:], p)
	_, err := w.Write(b)
	return err
}

// ReadDatagram reads one framed datagram into buf (at least MaxDatagram
// bytes) and returns its length. A stream ending between datagrams is
// io.EOF, inside one io.ErrUnexpectedEOF.
func ReadDatagram(r io.Reader, buf []byte) (int, error) {
	var h [2]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, err
	}
	n := int(binary.BigEndian.Uint16(h[:]))
	if n > len(buf) {
		return 0, fmt.Errorf("protocol: datagram of %d bytes, buffer %d", n, len(buf))
	}
	if _, err := io.ReadFull(r, buf[:n]); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return 0, err
	}
	return n, nil
}
