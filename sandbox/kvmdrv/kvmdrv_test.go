package kvmdrv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/hyperhq/hyperd-go/internal/kvmtest"

	"github.com/hyperhq/hyperd-go/e2e/imgtest"
	"github.com/hyperhq/hyperd-go/internal/testbin"
	"github.com/hyperhq/hyperd-go/kvm"
	"github.com/hyperhq/hyperd-go/sandbox"
)

func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// buildHyperd returns the hyperd binary (whose `vm run` is the VM process).
func buildHyperd(t *testing.T) string {
	t.Helper()
	return testbin.Build(t, "./cmd/hyperd")
}

// TestCreateBootDeadline starts a real VM process for a pod with a disk and
// vsock attached whose guest never answers, so Create must fail within the
// boot deadline with the console tail in its error, and leave no process or
// socket behind. With hardware virtualization the guest boots for real to
// an init that is not an agent; on software-nested KVM the guest cannot
// boot at all (its first console line alone takes ~20 s of emulated
// ring-0 code).
func TestCreateBootDeadline(t *testing.T) {
	kvmtest.Need(t)
	hw := kvm.HostHasHardwareVirt()
	kernel := filepath.Join(repoRoot(), "build", "vmlinux")
	if _, err := os.Stat(kernel); err != nil {
		t.Fatalf("run make kernel: %v", err)
	}
	dir := t.TempDir()
	hyperd := buildHyperd(t)
	initrd := filepath.Join(dir, "initrd")
	timeout := 45 * time.Second
	if hw {
		// the guest must reach its init within it: ~3-8 s in the nested
		// runner's L1 (emulated SVM), 15 s was seen with the host loaded
		timeout = 30 * time.Second
		if err := imgtest.SilentInitrd(initrd); err != nil {
			t.Fatal(err)
		}
	} else {
		os.WriteFile(initrd, []byte("not a real initramfs: the guest never gets that far here"), 0o644)
	}
	disk := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(disk, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	connected := false
	// loglevel=7 over BaseCmdline's quiet: the whole boot log, for the
	// console-tail assertions below
	d := &Driver{Hyperd: hyperd, Kernel: kernel, Initrd: initrd, BootTimeout: timeout, Cmdline: "loglevel=7",
		Connect: func(ctx context.Context, dial Dialer) (sandbox.Agent, error) {
			connected = true
			return nil, errors.New("unexpected agent connection")
		}}
	state := filepath.Join(dir, "pod")
	start := time.Now()
	_, err := d.Create(context.Background(), sandbox.Config{ID: "pod-test", Hostname: "pod-test", VCPU: 1, MemoryMiB: 128, StateDir: state,
		Disks: []sandbox.Disk{{HostPath: disk, ReadOnly: true}}})
	took := time.Since(start)
	if err == nil {
		t.Fatal("Create succeeded on a host where the guest cannot boot")
	}
	if connected {
		t.Error("the agent connector was called although no agent answered")
	}
	msg := err.Error()
	for _, want := range []string{fmt.Sprintf("did not answer within %v", timeout), "console tail"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q:\n%s", want, msg)
		}
	}
	// The tail must be the guest kernel's own output, captured from our UART.
	if !regexp.MustCompile(`\[\s*\d+\.\d{6}\] `).MatchString(msg) {
		t.Errorf("the console tail in the error has no kernel log line:\n%s", msg)
	}
	console, err := os.ReadFile(filepath.Join(state, consoleLog))
	if err != nil || !strings.Contains(string(console), "Linux version") {
		t.Errorf("console log kept in the state dir lacks the kernel banner (%v)", err)
	}
	if took > timeout+30*time.Second {
		t.Errorf("Create took %v with a %v boot deadline", took, timeout)
	}
	if hw && !strings.Contains(string(console), "silent init: no agent") {
		t.Errorf("the guest did not reach its init:\n%s", console)
	}
	if _, err := os.Stat(filepath.Join(state, vsockSock)); !os.IsNotExist(err) {
		t.Errorf("vsock socket left behind: %v", err)
	}
	out, _ := exec.Command("pgrep", "-f", state).Output()
	if len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("VM process left running: %s", out)
	}
	t.Logf("boot failure detected after %v: %s", took.Round(time.Millisecond), strings.SplitN(msg, "\n", 2)[0])
}

func TestDialVsockRejects(t *testing.T) {
	dir := t.TempDir()
	uds := filepath.Join(dir, "v.sock")
	ln, err := net.Listen("unix", uds)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			buf := make([]byte, 64)
			c.Read(buf)
			c.Write([]byte("NO such port\n"))
			c.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := DialVsock(ctx, uds, 1024); err == nil || !strings.Contains(err.Error(), "NO such port") {
		t.Errorf("DialVsock accepted a refusal: %v", err)
	}
	if _, err := DialVsock(ctx, filepath.Join(dir, "missing"), 1024); err == nil {
		t.Error("DialVsock to a missing socket succeeded")
	}
}

// TestCheckSocketPaths: a VM whose <uds>_<port> listeners would exceed
// sun_path is refused as the request's fault, saying by how much.
func TestCheckSocketPaths(t *testing.T) {
	for _, c := range []struct {
		name string
		uds  string
		ok   bool
	}{
		{"default root", "/var/lib/hyper/pods/web/sandbox/vm/vsock.sock", true},
		{"at the limit", "/" + strings.Repeat("a", maxSocketPath-len("_4294967295")-1), true},
		{"one over", "/" + strings.Repeat("a", maxSocketPath-len("_4294967295")), false},
		{"long pod id", "/var/lib/hyper/pods/" + strings.Repeat("p", 100) + "/sandbox/vm/vsock.sock", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := checkSocketPaths(c.uds)
			var ce *sandbox.ConfigError
			if (err == nil) != c.ok || (err != nil && !errors.As(err, &ce)) {
				t.Fatalf("checkSocketPaths(%d bytes) = %v (%T), want ok %v", len(c.uds), err, err, c.ok)
			}
			if err != nil && !strings.Contains(err.Error(), "shorter") {
				t.Errorf("the error says nothing of what to do: %v", err)
			}
		})
	}
}
