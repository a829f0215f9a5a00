// Package regtest starts Debian's docker-registry for tests (like
// net/http/httptest): on a loopback port, with a temporary storage
// directory and optionally htpasswd auth. It also finds skopeo. Missing
// tools are test failures that say what to install, never skips.
package regtest

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Start runs docker-registry on 127.0.0.1 with a temp storage dir (deleted
// with the test) and returns its host:port. With user set, the registry asks
// for HTTP basic auth checked against an htpasswd file holding user:pass.
// The registry is killed when the test ends.
func Start(t testing.TB, user, pass string) string {
	t.Helper()
	bin, err := exec.LookPath("docker-registry")
	if err != nil {
		t.Fatalf("registry tests need the docker-registry binary (apt-get install -y docker-registry): %v", err)
	}
	dir := t.TempDir()
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
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
	logf, err := os.Create(filepath.Join(dir, "registry.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	logs := func() string {
		b, _ := os.ReadFile(logf.Name())
		return string(b)
	}
	cmd := exec.Command(bin, "serve", filepath.Join(dir, "config.yml"))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting docker-registry: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
	want := 200
	if user != "" {
		want = 401
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == want {
				return addr
			}
			err = fmt.Errorf("GET /v2/ answered %s, want %d", resp.Status, want)
		}
		select {
		case werr := <-exited:
			exited <- werr
			t.Fatalf("docker-registry exited at startup (%v):\n%s", werr, logs())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("docker-registry did not answer on %s within 15s: %v\n%s", addr, err, logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Skopeo returns the path of the skopeo binary.
func Skopeo(t testing.TB) string {
	t.Helper()
	p, err := exec.LookPath("skopeo")
	if err != nil {
		t.Fatalf("interop tests need skopeo (apt-get install -y skopeo): %v", err)
	}
	return p
}

// Run runs a command and returns its combined output; failing is fatal.
func Run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
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
