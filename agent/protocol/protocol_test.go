package protocol

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"
)

func frame(p []byte) []byte {
	b := make([]byte, 4+len(p))
	binary.BigEndian.PutUint32(b, uint32(len(p)))
	copy(b[4:], p)
	return b
}

func TestReadFrame(t *testing.T) {
	huge := make([]byte, 4)
	binary.BigEndian.PutUint32(huge, MaxFrame+1)
	lying := make([]byte, 4)
	binary.BigEndian.PutUint32(lying, MaxFrame)
	tests := []struct {
		name string
		in   []byte
		want []byte
		err  error
	}{
		{"empty frame", frame(nil), []byte{}, nil},
		{"small", frame([]byte(`{"id":1}`)), []byte(`{"id":1}`), nil},
		{"eof", nil, nil, io.EOF},
		{"short header", []byte{0, 0}, nil, io.ErrUnexpectedEOF},
		{"too large", huge, nil, ErrFrameTooLarge},
		{"lying length", append(lying, 'x'), nil, io.ErrUnexpectedEOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ReadFrame(bytes.NewReader(tt.in))
			if !errors.Is(err, tt.err) {
				t.Fatalf("err = %v, want %v", err, tt.err)
			}
			if err == nil && !bytes.Equal(got, tt.want) {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	req := Request{ID: 7, Op: OpPing}
	if err := WriteJSON(&buf, req); err != nil {
		t.Fatal(err)
	}
	b, err := ReadFrame(&buf)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeRequest(b)
	if err != nil || got.ID != 7 || got.Op != OpPing {
		t.Fatalf("got %+v, %v", got, err)
	}
}

func TestDecodeHello(t *testing.T) {
	tests := []struct {
		in string
		ok bool
	}{
		{`{"version":1,"kind":"control"}`, true},
		{`{"version":1,"kind":"stdout","container":"a"}`, true},
		{`{"version":2,"kind":"control"}`, false},
		{`{"version":1,"kind":"bogus"}`, false},
		{`{"version":1`, false},
	}
	for _, tt := range tests {
		_, err := DecodeHello([]byte(tt.in))
		if (err == nil) != tt.ok {
			t.Errorf("%s: err = %v", tt.in, err)
		}
	}
}

func FuzzDecode(f *testing.F) {
	f.Add(frame([]byte(`{"id":1,"op":"ping"}`)))
	f.Add(frame([]byte(`{"version":1,"kind":"logs","logs":{"stdout":true,"tail":-1}}`)))
	f.Add(frame([]byte(`{"id":2,"op":"add","body":{"id":"c","process":{"args":["sh"]}}}`)))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{0, 0, 0, 3, '{', '}'})
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		for {
			b, err := ReadFrame(r)
			if err != nil {
				return
			}
			if len(b) > MaxFrame || len(b) > len(data) {
				t.Fatalf("frame of %d bytes from %d input bytes", len(b), len(data))
			}
			DecodeRequest(b)
			DecodeHello(b)
			var rec LogRecord
			ReadJSON(bytes.NewReader(frame(b)), &rec)
		}
	})
}
