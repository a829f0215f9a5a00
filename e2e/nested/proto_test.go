package nested

import (
	"bytes"
	"encoding/binary"
	"io"
	"strings"
	"testing"
)

func TestFrames(t *testing.T) {
	var b bytes.Buffer
	big := bytes.Repeat([]byte("x"), MaxFrame+10)
	for p := big; len(p) > 0; {
		n := min(len(p), MaxFrame)
		if err := WriteFrame(&b, FrameStdout, p[:n]); err != nil {
			t.Fatal(err)
		}
		p = p[n:]
	}
	if err := WriteExit(&b, Exit{Code: 7}); err != nil {
		t.Fatal(err)
	}
	var got []byte
	for {
		typ, p, err := ReadFrame(&b)
		if err != nil {
			t.Fatal(err)
		}
		if typ == FrameExit {
			if string(p) != `{"code":7}` {
				t.Errorf("exit frame %q", p)
			}
			break
		}
		if typ != FrameStdout || len(p) > MaxFrame {
			t.Fatalf("frame type %d, %d bytes", typ, len(p))
		}
		got = append(got, p...)
	}
	if !bytes.Equal(got, big) {
		t.Errorf("payload: %d bytes back of %d", len(got), len(big))
	}
}

func TestReadFrameRejects(t *testing.T) {
	hdr := func(typ byte, n uint32) []byte {
		h := make([]byte, 5)
		h[0] = typ
		binary.BigEndian.PutUint32(h[1:], n)
		return h
	}
	for _, c := range []struct {
		name string
		in   []byte
		want string
	}{
		{"unknown type", hdr(9, 1), "unknown frame type"},
		{"type zero", hdr(0, 0), "unknown frame type"},
		{"oversized", hdr(FrameStdout, MaxFrame+1), "exceeds"},
		{"cut payload", append(hdr(FrameStdout, 4), 'a'), io.ErrUnexpectedEOF.Error()},
		{"cut header", []byte{1, 0}, io.ErrUnexpectedEOF.Error()},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, _, err := ReadFrame(bytes.NewReader(c.in))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("err %v, want %q", err, c.want)
			}
		})
	}
	if err := WriteFrame(io.Discard, FrameStdout, make([]byte, MaxFrame+1)); err == nil {
		t.Error("WriteFrame took an oversized payload")
	}
}

func FuzzReadFrame(f *testing.F) {
	f.Add([]byte{1, 0, 0, 0, 2, 'h', 'i'})
	f.Add([]byte{3, 0, 0, 0, 10, '{', '"', 'c', 'o', 'd', 'e', '"', ':', '1', '}'})
	f.Fuzz(func(t *testing.T, in []byte) {
		typ, p, err := ReadFrame(bytes.NewReader(in))
		if err != nil {
			return
		}
		if typ < FrameStdout || typ > FramePong || len(p) > MaxFrame || len(p) > len(in) {
			t.Fatalf("accepted type %d with %d bytes from %d", typ, len(p), len(in))
		}
	})
}
