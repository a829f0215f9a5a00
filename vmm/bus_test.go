package vmm

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/hyperhq/hyperd-go/guest/guesttest"
	"github.com/hyperhq/hyperd-go/internal/syncbuf"
)

type nopPIO struct{ id int }

func (nopPIO) PIORead(uint16, []byte)  {}
func (nopPIO) PIOWrite(uint16, []byte) {}

func TestBusRanges(t *testing.T) {
	var b bus
	for _, r := range []struct{ base, size uint16 }{{0x3f8, 8}, {0x60, 1}, {0x64, 1}, {0x3c0, 2}} {
		if err := b.addPIO(r.base, r.size, nopPIO{int(r.base)}); err != nil {
			t.Fatal(err)
		}
	}
	for _, r := range []struct{ base, size uint16 }{{0x3fc, 8}, {0x3f0, 9}, {0x64, 1}, {0x3bf, 2}} {
		if err := b.addPIO(r.base, r.size, nopPIO{}); err == nil {
			t.Errorf("overlapping range %#x+%d accepted", r.base, r.size)
		}
	}
	for _, tc := range []struct {
		port uint16
		id   int
		off  uint16
		ok   bool
	}{
		{0x3f8, 0x3f8, 0, true}, {0x3ff, 0x3f8, 7, true}, {0x400, 0, 0, false}, {0x3f7, 0, 0, false},
		{0x60, 0x60, 0, true}, {0x61, 0, 0, false}, {0x3c1, 0x3c0, 1, true}, {0, 0, 0, false},
	} {
		d, off := b.findPIO(tc.port)
		if (d != nil) != tc.ok || tc.ok && (d.(nopPIO).id != tc.id || off != tc.off) {
			t.Errorf("port %#x: %v+%d, want device %#x+%d (%v)", tc.port, d, off, tc.id, tc.off, tc.ok)
		}
	}
	if err := b.addMMIO(0xd0000000, 0x1000, nil); err != nil {
		t.Fatal(err)
	}
	if err := b.addMMIO(0xd0000800, 0x1000, nil); err == nil {
		t.Error("overlapping MMIO range accepted")
	}
	if _, off := b.findMMIO(0xd0000ffc); off != 0xffc {
		t.Errorf("MMIO offset %#x", off)
	}
}

// TestMachineStops boots tiny PVH kernels (guest/guesttest) that write a
// line to COM1 and then power off through the ACPI sleep register, reset
// through the i8042, or triple-fault: the machine's Result says which, and
// the console got the line. No Linux needed, so it runs in milliseconds on
// any KVM.
func TestMachineStops(t *testing.T) {
	needKVM(t)
	for _, tc := range []struct {
		act  guesttest.Action
		want StopReason
	}{
		{guesttest.Poweroff, StopPoweroff},
		{guesttest.Reset, StopReset},
		{guesttest.TripleFault, StopTripleFault},
	} {
		t.Run(string(tc.want), func(t *testing.T) {
			k := t.TempDir() + "/kernel"
			if err := os.WriteFile(k, guesttest.Kernel("hello from "+string(tc.want)+"\n", tc.act), 0o644); err != nil {
				t.Fatal(err)
			}
			var console syncbuf.Buffer
			m, err := New(Config{Kernel: k, MemMiB: 32, CPUs: 1, Console: &console})
			if err != nil {
				t.Fatal(err)
			}
			m.Start()
			select {
			case <-m.Done():
			case <-time.After(30 * time.Second):
				m.Stop()
				t.Fatalf("the guest did not stop; console %q", console.String())
			}
			res := m.Wait()
			if res.Reason != tc.want {
				t.Errorf("stopped with %v, want %s", res, tc.want)
			}
			if !strings.Contains(console.String(), "hello from "+string(tc.want)) {
				t.Errorf("console %q", console.String())
			}
		})
	}
}
