package kvmdrv

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hyperhq/hyperd-go/internal/kvmtest"

	"github.com/hyperhq/hyperd-go/guest/guesttest"
	"github.com/hyperhq/hyperd-go/sandbox"
)

// TestVMStopReasons boots tiny PVH kernels (guest/guesttest) that write a
// line to the serial console and then power off, reset, triple-fault or
// halt, through the real driver and VM process: Create must fail at once
// (not at the boot deadline) with the right typed reason and the console
// line, and leave no process or socket. A VM killed from outside is
// reported as killed.
func TestVMStopReasons(t *testing.T) {
	kvmtest.Need(t)
	hyperd := buildHyperd(t)
	for _, tc := range []struct {
		name   string
		msg    string
		act    guesttest.Action
		reason string
		detail string
	}{
		{"poweroff", "reboot: Power down", guesttest.Poweroff, sandbox.ExitPoweroff, "powered off"},
		{"panic", "Kernel panic - not syncing: Attempted to kill init!", guesttest.Reset, sandbox.ExitPanic, "panicked"},
		{"reboot", "reboot: Restarting system", guesttest.Reset, sandbox.ExitReset, "rebooted"},
		{"triple fault", "about to fault", guesttest.TripleFault, sandbox.ExitCrash, "triple-fault"},
		{"killed", "idle", guesttest.Halt, sandbox.ExitKilled, "killed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			kernel := filepath.Join(dir, "kernel")
			if err := os.WriteFile(kernel, guesttest.Kernel(tc.msg+"\n", tc.act), 0o644); err != nil {
				t.Fatal(err)
			}
			initrd := filepath.Join(dir, "initrd")
			os.WriteFile(initrd, []byte("unused"), 0o644)
			d := &Driver{Hyperd: hyperd, Kernel: kernel, Initrd: initrd, BootTimeout: 60 * time.Second,
				Connect: func(ctx context.Context, dial Dialer) (sandbox.Agent, error) {
					return nil, errors.New("unexpected agent connection")
				}}
			state := filepath.Join(dir, "pod")
			var handle sandbox.Handle
			cfg := sandbox.Config{ID: "p", VCPU: 1, MemoryMiB: 64, StateDir: state, Started: func(h sandbox.Handle) {
				handle = h
				if tc.act == guesttest.Halt {
					pid, _ := strconv.Atoi(h.Data["pid"])
					go func() {
						// once the guest printed its line, kill the VM from outside
						for i := 0; i < 500 && !strings.Contains(consoleEnd(filepath.Join(state, consoleLog), 4096), tc.msg); i++ {
							time.Sleep(10 * time.Millisecond)
						}
						syscall.Kill(pid, syscall.SIGKILL)
					}()
				}
			}}
			start := time.Now()
			_, err := d.Create(context.Background(), cfg)
			took := time.Since(start)
			var ee *sandbox.ExitError
			if !errors.As(err, &ee) {
				t.Fatalf("Create = %v; want a *sandbox.ExitError", err)
			}
			if ee.Reason != tc.reason || !strings.Contains(err.Error(), tc.detail) || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("reason %q, error:\n%v\nwant %s with %q and the console line %q", ee.Reason, err, tc.reason, tc.detail, tc.msg)
			}
			if took > 30*time.Second {
				t.Errorf("the stop was reported after %v, not when the VM stopped", took)
			}
			if handle.Data["pid"] == "" || handle.Data["agent"] == "ready" {
				t.Errorf("Started got handle %+v; want a pid and no agent", handle)
			}
			if _, err := os.Stat(filepath.Join(state, vsockSock)); !os.IsNotExist(err) {
				t.Errorf("vsock socket left: %v", err)
			}
			if s := (&vmSandbox{pid: atoi(handle.Data["pid"]), uds: handle.Data["vsock"]}); s.alive() {
				t.Errorf("VM process %d still running", s.pid)
			}
		})
	}
}

func atoi(s string) int { n, _ := strconv.Atoi(s); return n }

// TestExitErrorFromConsole: for a VM of a previous daemon (not our child,
// no exit status) the reason comes from the stop line its VMM wrote.
func TestExitErrorFromConsole(t *testing.T) {
	for _, tc := range []struct {
		console, reason string
	}{
		{"[ 1.0] x\nhyperd vm run: guest stopped: poweroff ({Exits:1})\n", sandbox.ExitPoweroff},
		{"Kernel panic - not syncing: VFS\nhyperd vm run: guest stopped: reset ({Exits:1})\n", sandbox.ExitPanic},
		{"reboot: Restarting system\nhyperd vm run: guest stopped: reset ({})\n", sandbox.ExitReset},
		{"hyperd vm run: guest stopped: triple-fault: triple fault at rip 0x1 ({})\n", sandbox.ExitCrash},
		{"hyperd vm run: guest stopped: error: vCPU 0: KVM could not emulate ({})\n", sandbox.ExitVMM},
		{"[ 2.0] the VM was SIGKILLed: no stop line\n", sandbox.ExitVMM},
	} {
		p := filepath.Join(t.TempDir(), "console.log")
		os.WriteFile(p, []byte(tc.console), 0o600)
		e := exitError(nil, false, p)
		if e.Reason != tc.reason || !strings.Contains(e.Detail, "console tail") {
			t.Errorf("console %q: %+v; want %s", tc.console, e, tc.reason)
		}
	}
}
