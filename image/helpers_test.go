package image

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/hyperhq/hyperd-go/image/regtest"
)

// entry is one tar member for test layers.
type entry struct {
	name, body, link string
	typ              byte
	mode             int64
}

func tarOf(t testing.TB, es []entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range es {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: e.mode, Linkname: e.link, ModTime: time.Unix(1700000000, 0)}
		if h.Typeflag == 0 {
			h.Typeflag = tar.TypeReg
		}
		if h.Mode == 0 {
			h.Mode = 0o644
			if h.Typeflag == tar.TypeDir {
				h.Mode = 0o755
			}
		}
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(e.body))
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			tw.Write([]byte(e.body))
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// busyboxLayer is a layer holding /bin/busybox (from busybox-static) and symlinks.
func busyboxLayer(t testing.TB) []byte {
	t.Helper()
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Fatalf("these tests need a static busybox at /bin/busybox (apt-get install -y busybox-static): %v", err)
	}
	es := []entry{{name: "bin/", typ: tar.TypeDir}, {name: "bin/busybox", body: string(bb), mode: 0o755},
		{name: "etc/", typ: tar.TypeDir}, {name: "etc/passwd", body: "root:x:0:0:root:/root:/bin/sh\n"},
		{name: "tmp/", typ: tar.TypeDir, mode: 0o1777}}
	for _, l := range []string{"sh", "ls", "echo", "cat", "true"} {
		es = append(es, entry{name: "bin/" + l, typ: tar.TypeSymlink, link: "busybox"})
	}
	return tarOf(t, es)
}

func digestOf(b []byte) string {
	h := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(h[:])
}

// dockerArchive builds a `docker save` style archive of one image made of layers.
func dockerArchive(t testing.TB, tags []string, cmd []string, layers ...[]byte) (archive []byte, id string) {
	t.Helper()
	var diffs []string
	for _, l := range layers {
		diffs = append(diffs, digestOf(l))
	}
	cfg := map[string]any{
		"architecture": "amd64", "os": "linux", "created": "2026-01-02T03:04:05Z",
		"config": map[string]any{"Cmd": cmd, "Env": []string{"PATH=/bin"}, "WorkingDir": "/"},
		"rootfs": map[string]any{"type": "layers", "diff_ids": diffs},
	}
	cb, _ := json.Marshal(cfg)
	id = digestOf(cb)
	var es []entry
	var lps []string
	for i, l := range layers {
		p := fmt.Sprintf("layer%d/layer.tar", i)
		lps = append(lps, p)
		es = append(es, entry{name: p, body: string(l)})
	}
	es = append(es, entry{name: "config.json", body: string(cb)})
	mb, _ := json.Marshal([]dockerArchiveEntry{{Config: "config.json", RepoTags: tags, Layers: lps}})
	es = append(es, entry{name: "manifest.json", body: string(mb)})
	return tarOf(t, es), id
}

func openStore(t testing.TB) *Store {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "image"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func loadBusybox(t testing.TB, s *Store, tags ...string) string {
	t.Helper()
	ar, id := dockerArchive(t, tags, []string{"/bin/sh"}, busyboxLayer(t))
	if _, err := s.Load(context.Background(), bytes.NewReader(ar)); err != nil {
		t.Fatalf("load: %v", err)
	}
	return id
}

// startRegistry runs docker-registry on a loopback port (regtest.Start).
func startRegistry(t testing.TB, user, pass string) string { return regtest.Start(t, user, pass) }

func mustSkopeo(t testing.TB) string { return regtest.Skopeo(t) }

func run(t testing.TB, name string, args ...string) string { return regtest.Run(t, name, args...) }

type boltTx = bolt.Tx

func errorsIs(err, target error) bool { return errors.Is(err, target) }
