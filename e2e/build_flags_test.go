package e2e

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestHyperctlBuildFlags: hyperctl build's docker flags reach /image/build:
// -q prints only the image id, --build-arg sets an ARG, a second build uses
// the cache and --no-cache does not; the built image runs.
func TestHyperctlBuildFlags(t *testing.T) {
	requireHost(t)
	bin := binaries(t)
	tmp := t.TempDir()
	driver := suiteDriver()
	d := startDaemon(t, bin, filepath.Join(tmp, "root"), filepath.Join(tmp, "hyper.sock"), driver, driverFlags(t, driver)...)
	defer d.stop()
	d.loadBusybox()
	dir := filepath.Join(tmp, "ctx")
	os.MkdirAll(dir, 0o755)
	os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte("FROM busybox\nARG GREETING=none\nRUN echo $GREETING > /greeting\nCMD [\"cat\", \"/greeting\"]\n"), 0o644)

	out, err := d.hyperctl(bin, "build", "-q", "--build-arg", "GREETING=hello", "-t", "greet:1", dir)
	if err != nil || !regexp.MustCompile(`^sha256:[0-9a-f]{64}\n$`).MatchString(out) {
		t.Fatalf("hyperctl build -q: %v\n%q (want only the image id)", err, out)
	}
	id := strings.TrimSpace(out)
	if out, err := d.hyperctl(bin, "run", "--rm", "greet:1"); err != nil || strings.TrimSpace(out) != "hello" {
		t.Fatalf("run the built image: %v %q (want the build arg's value)", err, out)
	}
	out, err = d.hyperctl(bin, "build", "--build-arg", "GREETING=hello", "-t", "greet:2", dir)
	if err != nil || !strings.Contains(out, "Using cache") || !strings.Contains(out, "Successfully built "+id[len("sha256:"):][:12]) {
		t.Errorf("rebuild did not use the cache: %v\n%s", err, out)
	}
	out, err = d.hyperctl(bin, "build", "--no-cache", "--build-arg", "GREETING=bye", "-t", "greet:3", dir)
	if err != nil || strings.Contains(out, "Using cache") || !strings.Contains(out, "Step 3/4 : RUN") {
		t.Errorf("--no-cache build: %v\n%s", err, out)
	}
	if out, err := d.hyperctl(bin, "run", "--rm", "greet:3"); err != nil || strings.TrimSpace(out) != "bye" {
		t.Errorf("run greet:3: %v %q", err, out)
	}
	if out, err := d.hyperctl(bin, "build", "--build-arg", "=x", dir); err == nil {
		t.Errorf("a build arg without a name was accepted: %s", out)
	}
}
