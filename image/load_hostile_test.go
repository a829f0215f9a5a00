package image

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// TestLoadHostileArchive: /image/load never reads outside the archive it
// extracted, nor anything but a regular file. manifest.json as a symlink
// to /dev/zero once ran hyperd out of memory, to a FIFO hung the handler,
// to a host file got it parsed. Each is now refused as invalid, at once.
func TestLoadHostileArchive(t *testing.T) {
	host := t.TempDir()
	fifo := filepath.Join(host, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	secret := filepath.Join(host, "manifest.json")
	if err := os.WriteFile(secret, []byte(`[{"Config":"c.json","RepoTags":["stolen:latest"],"Layers":[]}]`), 0o600); err != nil {
		t.Fatal(err)
	}
	link := func(name, target string) []byte {
		var b bytes.Buffer
		tw := tar.NewWriter(&b)
		tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeSymlink, Linkname: target})
		tw.Close()
		return b.Bytes()
	}
	withConfigLink := func(target string) []byte {
		var b bytes.Buffer
		tw := tar.NewWriter(&b)
		m := []byte(`[{"Config":"c.json","RepoTags":["x:latest"],"Layers":[]}]`)
		tw.WriteHeader(&tar.Header{Name: "manifest.json", Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(m))})
		tw.Write(m)
		tw.WriteHeader(&tar.Header{Name: "c.json", Typeflag: tar.TypeSymlink, Linkname: target})
		tw.Close()
		return b.Bytes()
	}
	for _, tc := range []struct {
		name string
		ar   []byte
	}{
		{"manifest.json -> /dev/zero", link("manifest.json", "/dev/zero")},
		{"manifest.json -> a host FIFO", link("manifest.json", fifo)},
		{"manifest.json -> a host file", link("manifest.json", secret)},
		{"manifest.json -> ../ escape", link("manifest.json", "../../../../../../../.."+secret)},
		{"config -> /dev/zero", withConfigLink("/dev/zero")},
		{"config -> a host FIFO", withConfigLink(fifo)},
		{"index.json -> a host file", link("index.json", secret)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := openStore(t)
			done := make(chan error, 1)
			go func() {
				_, err := s.Load(context.Background(), bytes.NewReader(tc.ar))
				done <- err
			}()
			select {
			case err := <-done:
				if !errors.Is(err, ErrInvalid) {
					t.Fatalf("Load: %v, want ErrInvalid", err)
				}
			case <-time.After(20 * time.Second):
				// unblock the reader of the FIFO, if that is where it hangs
				if f, err := os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
					f.Close()
				}
				t.Fatal("Load hung")
			}
			if imgs, err := s.List(true); err != nil || len(imgs) != 0 {
				t.Fatalf("images registered: %v %v", imgs, err)
			}
		})
	}
}
