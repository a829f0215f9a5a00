package image

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"testing"
)

func tarOfFiles(t *testing.T, files map[string]string) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, n := range []string{"a", "b", "zeros"} {
		c, ok := files[n]
		if !ok {
			continue
		}
		if err := tw.WriteHeader(&tar.Header{Name: n, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(c))}); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(c))
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// TestCheckTar: a whole tar passes; one cut anywhere (mid-entry, at an
// entry boundary, inside the end marker) or followed by data fails.
func TestCheckTar(t *testing.T) {
	whole := tarOfFiles(t, map[string]string{"a": "hello", "b": string(make([]byte, 700)), "zeros": string(make([]byte, 2048))})
	// the offset where "zeros" starts: header a + data a (1 block) +
	// header b + data b (2 blocks)
	boundary := 512 + 512 + 512 + 1024
	for _, tc := range []struct {
		name string
		data []byte
		ok   bool
	}{
		{"whole", whole, true},
		{"whole, padded to a record", append(append([]byte{}, whole...), make([]byte, 8192)...), true},
		{"empty archive", tarOfFiles(t, nil), true},
		{"cut mid-entry", whole[:700], false},
		{"cut at an entry boundary", whole[:boundary], false},
		{"cut after a zero-filled file, before the marker", whole[:len(whole)-1024], false},
		{"cut inside the end marker", whole[:len(whole)-512], false},
		{"nothing", nil, false},
		{"data after the marker", append(append([]byte{}, whole...), 'x'), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := checkTar(bytes.NewReader(tc.data))
			if tc.ok != (err == nil) {
				t.Fatalf("checkTar: %v, want ok=%v", err, tc.ok)
			}
			if err != nil && !errors.Is(err, ErrInvalid) {
				t.Fatalf("%v is not ErrInvalid", err)
			}
		})
	}
}

// TestCommitCutShortLayer: a commit whose layer stream ends early (at an
// entry boundary, where a tar reader sees a clean end) registers nothing.
func TestCommitCutShortLayer(t *testing.T) {
	s := openStore(t)
	id := loadBusybox(t, s)
	before, _ := s.List(true)
	whole := tarOfFiles(t, map[string]string{"a": "hello", "b": "world"})
	_, err := s.Commit(context.Background(), id, bytes.NewReader(whole[:1024]), CommitOptions{Repo: "cut", Tag: "v1"})
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("commit of a cut layer: %v, want ErrInvalid", err)
	}
	if after, _ := s.List(true); len(after) != len(before) {
		t.Fatalf("images after a failed commit: %d, before %d", len(after), len(before))
	}
	if _, err := s.Commit(context.Background(), id, bytes.NewReader(whole), CommitOptions{Repo: "whole", Tag: "v1"}); err != nil {
		t.Fatalf("commit of a whole layer: %v", err)
	}
}
