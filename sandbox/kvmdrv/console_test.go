// This file tests the VM console log as the kvm driver uses it: capped by
// the VM process, its tail read across rotation for failure reasons.
package kvmdrv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hyperhq/hyperd-go/internal/consolelog"
	"github.com/hyperhq/hyperd-go/sandbox"
)

// TestConsoleLogCapped: the driver has the VM process write its console
// log capped (--console-log, --console-max): a guest that prints 4 MiB
// leaves at most the cap on disk, and the failure reason and console tail
// still come out right across the log's rotation. The VM process is this
// test binary (TestFakeVMConsole) standing in for `hyperd vm run`.
func TestConsoleLogCapped(t *testing.T) {
	dir := t.TempDir()
	script := filepath.Join(dir, "fake-hyperd")
	os.WriteFile(script, []byte(fmt.Sprintf(`#!/bin/sh
while [ $# -gt 0 ]; do
	case "$1" in --console-log) log=$2;; --console-max) max=$2;; esac
	shift
done
KVMDRV_FAKE_CONSOLE="$log" KVMDRV_FAKE_CONSOLE_MAX="$max" exec %s -test.run='^TestFakeVMConsole$'
`, os.Args[0])), 0o755)
	const capBytes = 64 << 10
	d := &Driver{Hyperd: script, Kernel: "k", Initrd: "i", BootTimeout: 20 * time.Second, ConsoleMax: capBytes,
		Connect: func(ctx context.Context, dial Dialer) (sandbox.Agent, error) {
			return nil, errors.New("unexpected agent connection")
		}}
	state := filepath.Join(dir, "pod")
	_, err := d.Create(context.Background(), sandbox.Config{ID: "p", StateDir: state})
	var stopped *sandbox.ExitError
	if !errors.As(err, &stopped) || stopped.Reason != sandbox.ExitPanic {
		t.Fatalf("Create: %v; want the guest's panic (reset + panic line)", err)
	}
	if !strings.Contains(stopped.Detail, "line 99999 of the guest\nKernel panic - not syncing: fake") {
		t.Errorf("console tail lacks the last lines:\n%s", stopped.Detail)
	}
	var on int64
	for _, p := range []string{consoleLog, consoleLog + ".1"} {
		st, err := os.Stat(filepath.Join(state, p))
		if err != nil {
			t.Fatalf("%s: %v (the log did not rotate?)", p, err)
		}
		on += st.Size()
	}
	if on > capBytes {
		t.Errorf("%d bytes of console log on disk, cap %d", on, capBytes)
	}
	// a reattached VM's stop: reason from the stop line across the rotation
	if e := exitError(nil, false, filepath.Join(state, consoleLog)); e.Reason != sandbox.ExitPanic {
		t.Errorf("from the console log alone: %+v", e)
	}
}

// TestFakeVMConsole is the VM process of TestConsoleLogCapped. Run
// directly, it does nothing.
func TestFakeVMConsole(t *testing.T) {
	path := os.Getenv("KVMDRV_FAKE_CONSOLE")
	if path == "" {
		return
	}
	max, _ := strconv.ParseInt(os.Getenv("KVMDRV_FAKE_CONSOLE_MAX"), 10, 64)
	w, err := consolelog.Open(path, max)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fake VM:", err)
		os.Exit(2)
	}
	for i := 0; i <= 99999; i++ {
		fmt.Fprintf(w, "line %d of the guest\n", i)
	}
	fmt.Fprintln(w, "Kernel panic - not syncing: fake")
	fmt.Fprintln(w, "hyperd vm run: guest stopped: reset ({})")
	w.Close()
	os.Exit(3)
}

// TestExitErrorAcrossRotation: the console lines that decide the reason
// may be in console.log.1; without a stop line in the console log the
// reason comes from the VM process's own output (vmm.log), which is shown.
func TestExitErrorAcrossRotation(t *testing.T) {
	for _, tc := range []struct {
		name           string
		old, cur, vmm  string
		reason, detail string
	}{
		{"panic in .1", "Kernel panic - not syncing: VFS\n", "hyperd vm run: guest stopped: reset ({})\n", "", sandbox.ExitPanic, "guest stopped: reset"},
		{"stop line in .1", "x\nhyperd vm run: guest stopped: triple-fault ({})\n", "", "", sandbox.ExitCrash, "triple-fault"},
		{"stop line only in vmm.log", "", "[ 1.0] booting\n", "hyperd vm run: guest stopped: poweroff ({})\n", sandbox.ExitPoweroff, "VM process output:\nhyperd vm run: guest stopped"},
		{"VMM crashed", "", "[ 1.0] booting\n", "panic: runtime error: index out of range\n", sandbox.ExitVMM, "VM process output:\npanic: runtime error"},
	} {
		dir := t.TempDir()
		p := filepath.Join(dir, consoleLog)
		os.WriteFile(p+".1", []byte(tc.old), 0o600)
		os.WriteFile(p, []byte(tc.cur), 0o600)
		os.WriteFile(filepath.Join(dir, vmmLog), []byte(tc.vmm), 0o600)
		e := exitError(nil, false, p)
		if e.Reason != tc.reason || !strings.Contains(e.Detail, tc.detail) {
			t.Errorf("%s: %+v; want %s with %q", tc.name, e, tc.reason, tc.detail)
		}
	}
}
