package kvmdrv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hyperhq/hyperd-go/sandbox"
)

// TestBootRetries: a VM whose guest crashes (triple fault, `hyperd vm run`
// exit 4) or whose kernel panics (a reset after a panic line) before its
// agent answered is booted again up to BootRetries times, each failed
// console kept; other stops (a plain reset, exit 3) are not retried. The VM process is a script standing in for `hyperd vm run`.
func TestBootRetries(t *testing.T) {
	for _, c := range []struct {
		name     string
		exit     int
		retries  int
		runs     int
		reason   string
		keptLogs int
	}{
		{"crash, no retries", 4, 0, 1, sandbox.ExitCrash, 0},
		{"crash, two retries", 4, 2, 3, sandbox.ExitCrash, 2},
		{"panic, two retries", 5, 2, 3, sandbox.ExitPanic, 2},
		{"reset is not retried", 3, 2, 1, sandbox.ExitReset, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			count := filepath.Join(dir, "runs")
			script := filepath.Join(dir, "fake-hyperd")
			// exit 5 stands for a reset after the guest console's panic line
			panicLine, code := "", c.exit
			if c.exit == 5 {
				panicLine, code = `while [ $# -gt 0 ]; do [ "$1" = --console-log ] && con=$2; shift; done
echo 'Kernel panic - not syncing: Fatal exception in interrupt' >> "$con"`, 3
			}
			os.WriteFile(script, []byte(fmt.Sprintf("#!/bin/sh\n%s\necho run >> %s\necho 'hyperd vm run: guest stopped: boom'\nexit %d\n", panicLine, count, code)), 0o755)
			d := &Driver{Hyperd: script, Kernel: "k", Initrd: "i", BootTimeout: 20 * time.Second, BootRetries: c.retries,
				Connect: func(ctx context.Context, dial Dialer) (sandbox.Agent, error) {
					return nil, errors.New("unexpected agent connection")
				}}
			state := filepath.Join(dir, "pod")
			_, err := d.Create(context.Background(), sandbox.Config{ID: "p", StateDir: state})
			var stopped *sandbox.ExitError
			if !errors.As(err, &stopped) || stopped.Reason != c.reason {
				t.Fatalf("Create: %v; want a stop with reason %s", err, c.reason)
			}
			b, _ := os.ReadFile(count)
			if n := strings.Count(string(b), "run"); n != c.runs {
				t.Errorf("the VM process ran %d times, want %d", n, c.runs)
			}
			kept, _ := filepath.Glob(filepath.Join(state, consoleLog+".failed-*"))
			if len(kept) != c.keptLogs {
				t.Errorf("crashed consoles kept: %v, want %d", kept, c.keptLogs)
			}
		})
	}
}

// TestBootRetryAfterTimeout: a VM whose agent does not answer within the
// boot timeout is booted again, and the second boot's ready signal reaches
// the driver (the first boot's pending accept on the ready socket, and the
// socket itself, are left for it). The first VM process never signals; the
// second is this test binary (TestFakeVMReady), which connects to the
// ready socket; the connector then reports that it was reached.
func TestBootRetryAfterTimeout(t *testing.T) {
	dir := t.TempDir()
	count := filepath.Join(dir, "runs")
	script := filepath.Join(dir, "fake-hyperd")
	os.WriteFile(script, []byte(fmt.Sprintf(`#!/bin/sh
while [ $# -gt 0 ]; do [ "$1" = --vsock ] && uds=$2; shift; done
echo run >> %s
[ "$(wc -l < %s)" -lt 2 ] && exec sleep 60
KVMDRV_FAKE_READY="${uds}_%d" exec %s -test.run='^TestFakeVMReady$'
`, count, count, ReadyPort, os.Args[0])), 0o755)
	reached := errors.New("the connector was reached")
	d := &Driver{Hyperd: script, Kernel: "k", Initrd: "i", BootTimeout: 2 * time.Second, BootRetries: 1,
		Connect: func(ctx context.Context, dial Dialer) (sandbox.Agent, error) { return nil, reached }}
	_, err := d.Create(context.Background(), sandbox.Config{ID: "p", StateDir: filepath.Join(dir, "pod")})
	if err == nil || !strings.Contains(err.Error(), reached.Error()) {
		t.Fatalf("Create: %v; want the second boot's ready signal to reach the connector", err)
	}
	b, _ := os.ReadFile(count)
	if n := strings.Count(string(b), "run"); n != 2 {
		t.Errorf("the VM process ran %d times, want 2", n)
	}
}

// TestFakeVMReady is the second VM process of TestBootRetryAfterTimeout:
// it signals ready and waits to be killed. Run directly, it does nothing.
func TestFakeVMReady(t *testing.T) {
	p := os.Getenv("KVMDRV_FAKE_READY")
	if p == "" {
		return
	}
	c, err := net.Dial("unix", p)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fake VM:", err)
		os.Exit(1)
	}
	c.Close()
	time.Sleep(time.Minute)
	os.Exit(0)
}
