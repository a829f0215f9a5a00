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
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
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

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startRegistry runs Debian's docker-registry on a loopback port with a temp storage
// dir, optionally with htpasswd auth for user:pass, and returns host:port.
func startRegistry(t testing.TB, user, pass string) string {
	t.Helper()
	bin, err := exec.LookPath("docker-registry")
	if err != nil {
		t.Fatalf("registry tests need the docker-registry binary (apt-get install -y docker-registry): %v", err)
	}
	dir := t.TempDir()
	port := freePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	cfg := fmt.Sprintf("version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: %s\n  delete:\n    enabled: true\nhttp:\n  addr: %s\n", filepath.Join(dir, "data"), addr)
	if user != "" {
		hp, err := exec.LookPath("htpasswd")
		if err != nil {
			t.Fatalf("auth tests need htpasswd (apt-get install -y apache2-utils): %v", err)
		}
		out, err := exec.Command(hp, "-Bbn", user, pass).Output()
		if err != nil {
			t.Fatalf("htpasswd: %v", err)
		}
		if err := os.WriteFile(filepath.Join(dir, "htpasswd"), out, 0o600); err != nil {
			t.Fatal(err)
		}
		cfg += fmt.Sprintf("auth:\n  htpasswd:\n    realm: test\n    path: %s\n", filepath.Join(dir, "htpasswd"))
	}
	if err := os.WriteFile(filepath.Join(dir, "config.yml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "serve", filepath.Join(dir, "config.yml"))
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting docker-registry: %v", err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 || resp.StatusCode == 401 {
				return addr
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("docker-registry did not answer on %s within 15s: %v\n%s", addr, err, logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func mustSkopeo(t testing.TB) string {
	t.Helper()
	p, err := exec.LookPath("skopeo")
	if err != nil {
		t.Fatalf("interop tests need skopeo (apt-get install -y skopeo): %v", err)
	}
	return p
}

func run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

type boltTx = bolt.Tx

func errorsIs(err, target error) bool { return errors.Is(err, target) }
