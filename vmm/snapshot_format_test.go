// This file tests the snapshot format without a guest: the sparse memory
// file, kernel structs kept as raw bytes, the UART's state, and the checks
// ReadSnapshot makes of a state file.

package vmm

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hyperhq/hyperd-go/kvm"
)

func TestWriteMemorySparse(t *testing.T) {
	mem := make([]byte, 8*memChunk)
	copy(mem[memChunk+5:], "data")
	mem[len(mem)-1] = 0xff
	p := filepath.Join(t.TempDir(), "memory")
	if err := writeMemory(p, mem); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, mem) {
		t.Fatal("the memory file does not read back as the memory")
	}
	st, _ := os.Stat(p)
	if a := allocated(st); a > 3*memChunk {
		t.Errorf("%d bytes allocated for 2 non-zero chunks of %d: zero chunks were written", a, memChunk)
	}
}

func TestRawRoundTrip(t *testing.T) {
	r := kvm.Regs{RIP: 0x1234, RSP: 0x8000, RFLAGS: 2}
	b := raw(&r)
	back, err := unraw[kvm.Regs](b, "registers")
	if err != nil || back != r {
		t.Fatalf("unraw(raw(r)) = %+v, %v", back, err)
	}
	if _, err := unraw[kvm.Regs](b[:len(b)-1], "registers"); err == nil {
		t.Error("a short struct was accepted")
	}
}

func TestUARTState(t *testing.T) {
	var out bytes.Buffer
	u := NewUART(&out, nil)
	u.Out(uartLCR, 0x83) // DLAB
	u.Out(uartRBR, 1)    // DLL
	u.Out(uartLCR, 0x03)
	u.Out(uartIER, ierRDI)
	u.Out(uartMCR, mcrOUT2|mcrDTR)
	u.Input([]byte("ab"))
	st := u.State()
	v := NewUART(&out, nil)
	if err := v.SetState(st); err != nil {
		t.Fatal(err)
	}
	if v.State().IER != st.IER || v.In(uartLCR) != 0x03 || v.In(uartRBR) != 'a' || v.In(uartRBR) != 'b' {
		t.Errorf("restored UART differs: %+v", v.State())
	}
	if err := v.SetState(UARTState{RX: make([]byte, maxUARTInput+1)}); err == nil {
		t.Error("an oversized pending input was accepted")
	}
}

func TestReadSnapshotRejects(t *testing.T) {
	good := Snapshot{Version: SnapshotVersion, MemMiB: 128, CPUs: 1, VCPUs: []VCPUState{{ID: 0}}}
	for _, tc := range []struct {
		name   string
		edit   func(s *Snapshot)
		raw    string
		errHas string
	}{
		{name: "good", edit: func(s *Snapshot) {}},
		{name: "version", edit: func(s *Snapshot) { s.Version = 99 }, errHas: "version"},
		{name: "tiny memory", edit: func(s *Snapshot) { s.MemMiB = 1 }, errHas: "memory"},
		{name: "huge memory", edit: func(s *Snapshot) { s.MemMiB = 1 << 20 }, errHas: "memory"},
		{name: "vcpu count", edit: func(s *Snapshot) { s.CPUs = 2 }, errHas: "vCPU"},
		{name: "vcpu id", edit: func(s *Snapshot) { s.VCPUs[0].ID = 3 }, errHas: "id"},
		{name: "devices", edit: func(s *Snapshot) { s.Devices = make([]DeviceState, 30) }, errHas: "devices"},
		{name: "not json", raw: "{", errHas: "snapshot state"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			b := []byte(tc.raw)
			if tc.edit != nil {
				s := good
				s.VCPUs = append([]VCPUState(nil), good.VCPUs...)
				tc.edit(&s)
				b, _ = json.Marshal(&s)
			}
			os.WriteFile(filepath.Join(dir, SnapshotStateFile), b, 0o600)
			_, err := ReadSnapshot(dir)
			switch {
			case tc.errHas == "" && err != nil:
				t.Fatalf("rejected: %v", err)
			case tc.errHas != "" && (err == nil || !strings.Contains(err.Error(), tc.errHas)):
				t.Fatalf("error %v, want one about %q", err, tc.errHas)
			}
		})
	}
	if _, err := ReadSnapshot(t.TempDir()); err == nil {
		t.Error("a directory without a state file was read")
	}
}
