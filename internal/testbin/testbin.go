// Package testbin gives tests the project's commands as static binaries:
// built once per test process with `go build`, or, where $HYPERD_TEST_BIN
// names a directory, taken from there. The nested runner's L1 (e2e/nested)
// has no Go toolchain: it runs the test binaries with HYPERD_TEST_BIN
// pointing at binaries built on the host.
package testbin

import (
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
)

// Env names the directory of prebuilt binaries.
const Env = "HYPERD_TEST_BIN"

var (
	mu    sync.Mutex
	dir   string
	built = map[string]error{}
)

// Repo is the module root.
func Repo() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// Build returns the binary of the main package pkg (a path relative to the
// module root, "./cmd/hyperd"), named after its last element, failing the
// test with the build's output if it does not build.
func Build(t testing.TB, pkg string) string {
	t.Helper()
	p, err := build(pkg)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// Commands returns a directory holding hyperd, hyperctl and hyper-agent.
func Commands(t testing.TB) string {
	t.Helper()
	var d string
	for _, c := range []string{"./cmd/hyperd", "./cmd/hyperctl", "./cmd/hyper-agent"} {
		d = filepath.Dir(Build(t, c))
	}
	return d
}

func build(pkg string) (string, error) {
	name := path.Base(pkg)
	if pre := os.Getenv(Env); pre != "" {
		p := filepath.Join(pre, name)
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("testbin: $%s=%s lacks %s: %v", Env, pre, name, err)
		}
		return p, nil
	}
	mu.Lock()
	defer mu.Unlock()
	if dir == "" {
		d, err := os.MkdirTemp("", "hyperd-testbin")
		if err != nil {
			return "", err
		}
		dir = d
	}
	p := filepath.Join(dir, name)
	err, ok := built[pkg]
	if !ok {
		cmd := exec.Command("go", "build", "-trimpath", "-o", p, pkg)
		cmd.Dir = Repo()
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, berr := cmd.CombinedOutput(); berr != nil {
			err = fmt.Errorf("testbin: go build %s: %v\n%s", pkg, berr, out)
		}
		built[pkg] = err
	}
	return p, err
}
