package guest

import (
	"bytes"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// testACPI is the machine testdata/dsdt.asl describes.
func testACPI() ACPIConfig {
	return ACPIConfig{
		CPUs:   2,
		Serial: true,
		Devices: []MMIODevice{
			{Base: 0xd0000000, Size: 0x200, GSI: 5},
			{Base: 0xd0001000, Size: 0x200, GSI: 6, Level: true},
			{Base: 0xd0002000, Size: 0x200, GSI: 23},
		},
		SleepPort: 0x3c0, ResetPort: 0x64, ResetValue: 0xfe,
	}
}

func sum(b []byte) (s uint8) {
	for _, v := range b {
		s += v
	}
	return
}

func TestPkgLength(t *testing.T) {
	// ACPI 6.5, 20.2.4: one byte up to 63; then the low nibble in the lead
	// byte (bits 7-6 = count of following bytes) and 8 bits per extra byte.
	for _, tc := range []struct {
		n    int
		want []byte
	}{
		{0, []byte{0x01}},
		{10, []byte{0x0b}},
		{62, []byte{0x3f}},
		{63, []byte{0x41, 0x04}},                  // 65 = 0x41
		{0xffd, []byte{0x4f, 0xff}},               // 0xfff in two bytes
		{0xffe, []byte{0x81, 0x00, 0x01}},         // 0x1001 needs three
		{0xffffc, []byte{0x8f, 0xff, 0xff}},       // 0xfffff, the most three bytes hold
		{0xffffd, []byte{0xc1, 0x00, 0x00, 0x01}}, // 0x100001 in four
	} {
		if got := pkgLength(tc.n); !bytes.Equal(got, tc.want) {
			t.Errorf("pkgLength(%d) = % x, want % x", tc.n, got, tc.want)
		}
	}
}

// TestAMLEncodings checks single constructs against the bytes iasl
// produces for the ASL in each case's name.
func TestAMLEncodings(t *testing.T) {
	for _, tc := range []struct {
		name string
		got  []byte
		want []byte
	}{
		{"EisaId PNP0501", le.AppendUint32(nil, eisaID("PNP0501")), []byte{0x41, 0xd0, 0x05, 0x01}},
		{"EisaId PNP0A03", le.AppendUint32(nil, eisaID("PNP0A03")), []byte{0x41, 0xd0, 0x0a, 0x03}},
		{"Zero", amlInteger(0), []byte{0x00}},
		{"One", amlInteger(1), []byte{0x01}},
		{"0x17", amlInteger(0x17), []byte{0x0a, 0x17}},
		{"0x3F8", amlInteger(0x3f8), []byte{0x0b, 0xf8, 0x03}},
		{"0xD0000000", amlInteger(0xd0000000), []byte{0x0c, 0x00, 0x00, 0x00, 0xd0}},
		{"0x100000000", amlInteger(1 << 32), []byte{0x0e, 0, 0, 0, 0, 1, 0, 0, 0}},
		{`"LNRO0005"`, amlString("LNRO0005"), append([]byte{0x0d}, "LNRO0005\x00"...)},
		{`Name (\_S5, Package (0x04) {5, 5, Zero, Zero})`, amlName("\\_S5", amlPackage(5, 5, 0, 0)),
			[]byte{0x08, 0x5c, '_', 'S', '5', '_', 0x12, 0x08, 0x04, 0x0a, 0x05, 0x0a, 0x05, 0x00, 0x00}},
		{"Device (VR00) {}", amlDevice("VR00"), []byte{0x5b, 0x82, 0x05, 'V', 'R', '0', '0'}},
		{"Scope (\\_SB) {}", amlScope("\\_SB"), []byte{0x10, 0x06, 0x5c, '_', 'S', 'B', '_'}},
		{"IO (Decode16, 0x3F8, 0x3F8, 1, 8)", resIO(0x3f8, 8), []byte{0x47, 0x01, 0xf8, 0x03, 0xf8, 0x03, 0x01, 0x08}},
		{"IRQNoFlags () {4}", resIRQNoFlags(4), []byte{0x22, 0x10, 0x00}},
		{"Memory32Fixed (ReadWrite, 0xD0000000, 0x200)", resMemory32Fixed(0xd0000000, 0x200, true),
			[]byte{0x86, 0x09, 0x00, 0x01, 0x00, 0x00, 0x00, 0xd0, 0x00, 0x02, 0x00, 0x00}},
		{"Memory32Fixed (ReadOnly, 0xFED00000, 0x400)", resMemory32Fixed(0xfed00000, 0x400, false),
			[]byte{0x86, 0x09, 0x00, 0x00, 0x00, 0x00, 0xd0, 0xfe, 0x00, 0x04, 0x00, 0x00}},
		{"Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive) {5}", resExtendedIRQ(5, true),
			[]byte{0x89, 0x06, 0x00, 0x03, 0x01, 0x05, 0x00, 0x00, 0x00}},
		{"Interrupt (ResourceConsumer, Level, ActiveHigh, Exclusive) {6}", resExtendedIRQ(6, false),
			[]byte{0x89, 0x06, 0x00, 0x01, 0x01, 0x06, 0x00, 0x00, 0x00}},
		{"ResourceTemplate () {IRQNoFlags () {4}}", resourceTemplate(resIRQNoFlags(4)),
			[]byte{0x11, 0x08, 0x0a, 0x05, 0x22, 0x10, 0x00, 0x79, 0x00}},
	} {
		if !bytes.Equal(tc.got, tc.want) {
			t.Errorf("%s = % x, want % x", tc.name, tc.got, tc.want)
		}
	}
}

// TestDSDTMatchesIASL compares our whole DSDT body with ACPICA's
// compilation of the same ASL (testdata/dsdt.asl -> testdata/dsdt.aml).
// The 36-byte headers differ only in the creator fields and checksum.
func TestDSDTMatchesIASL(t *testing.T) {
	want, err := os.ReadFile("testdata/dsdt.aml")
	if err != nil {
		t.Fatal(err)
	}
	got, err := dsdt(testACPI())
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("DSDT is %d bytes, iasl's %d", len(got), len(want))
	}
	if !bytes.Equal(got[:24], want[:24]) && !bytes.Equal(got[:9], want[:9]) {
		t.Errorf("header % x, iasl's % x", got[:24], want[:24])
	}
	for i := 36; i < len(got); i++ {
		if got[i] != want[i] {
			t.Fatalf("DSDT differs from iasl's at byte %#x:\nours % x\niasl % x", i, got[36:], want[36:])
		}
	}
	if sum(got) != 0 || sum(want) != 0 {
		t.Errorf("checksums: ours sums to %#x, iasl's to %#x", sum(got), sum(want))
	}
}

// TestDSDTDisassembles feeds our DSDT to ACPICA's disassembler (the
// interpreter family Linux uses) and checks what it understood.
func TestDSDTDisassembles(t *testing.T) {
	iasl, err := exec.LookPath("iasl")
	if err != nil {
		t.Fatalf("iasl is needed to check the DSDT (apt-get install acpica-tools): %v", err)
	}
	d, err := dsdt(testACPI())
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "dsdt.aml"), d, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(iasl, "-d", filepath.Join(dir, "dsdt.aml")).CombinedOutput()
	if err != nil {
		t.Fatalf("iasl -d: %v\n%s", err, out)
	}
	dsl, err := os.ReadFile(filepath.Join(dir, "dsdt.dsl"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`Device (COM1)`, `EisaId ("PNP0501")`, `IO (Decode16,`, `0x03F8,`, `IRQNoFlags ()`,
		`Device (VR00)`, `Device (VR01)`, `Device (VR02)`, `Name (_HID, "LNRO0005")`,
		`Memory32Fixed (ReadWrite,`, `0xD0001000,`,
		`Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive, ,, )`,
		`Interrupt (ResourceConsumer, Level, ActiveHigh, Exclusive, ,, )`,
		`Name (\_S5, Package (0x04)`,
	} {
		if !strings.Contains(string(dsl), want) {
			t.Errorf("disassembled DSDT lacks %q:\n%s", want, dsl)
		}
	}
}

func TestDSDTRejects(t *testing.T) {
	for _, tc := range []struct {
		name string
		dev  MMIODevice
		want string
	}{
		{"above 4 GiB", MMIODevice{Base: 1 << 32, Size: 0x200, GSI: 5}, "below 4 GiB"},
		{"crossing 4 GiB", MMIODevice{Base: 0xfffff000, Size: 0x2000, GSI: 5}, "below 4 GiB"},
		{"GSI beyond the I/O APIC", MMIODevice{Base: 0xd0000000, Size: 0x200, GSI: 24}, "pins"},
		{"the PIT's GSI", MMIODevice{Base: 0xd0000000, Size: 0x200, GSI: 2}, "PIT"},
		{"COM1's GSI", MMIODevice{Base: 0xd0000000, Size: 0x200, GSI: 4}, "COM1"},
	} {
		cfg := testACPI()
		cfg.Devices = []MMIODevice{tc.dev}
		if _, err := dsdt(cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want it to mention %q", tc.name, err, tc.want)
		}
	}
}

// TestACPITables writes the tables and walks them as a guest would: the
// RSDP in the legacy scan area with both checksums, the XSDT's entries,
// each table's signature, length and checksum, the FADT's flags and DSDT
// pointer, the MADT's processors, I/O APIC and override.
func TestACPITables(t *testing.T) {
	for _, cpus := range []int{1, 2, 8, 255} {
		mem := make([]byte, 2<<20)
		for i := range mem {
			mem[i] = 0xee // tables must not depend on zeroed memory
		}
		cfg := testACPI()
		cfg.CPUs = cpus
		rsdpAddr, err := WriteACPI(mem, cfg)
		if err != nil {
			t.Fatal(err)
		}
		if rsdpAddr != ACPIStart {
			t.Errorf("RSDP at %#x, want %#x (the start of the legacy scan area)", rsdpAddr, ACPIStart)
		}
		r := mem[rsdpAddr : rsdpAddr+36]
		if string(r[:8]) != "RSD PTR " || sum(r[:20]) != 0 || sum(r) != 0 || r[15] != 2 || le.Uint32(r[20:]) != 36 {
			t.Fatalf("bad RSDP % x", r)
		}
		table := func(addr uint64) []byte {
			if addr < ACPIStart || addr >= ACPIEnd || addr%8 != 0 {
				t.Fatalf("table at %#x, outside the ACPI area or misaligned", addr)
			}
			n := le.Uint32(mem[addr+4:])
			tb := mem[addr : addr+uint64(n)]
			if addr+uint64(n) > ACPIEnd {
				t.Fatalf("table %q at %#x+%d runs past the ACPI area", tb[:4], addr, n)
			}
			if sum(tb) != 0 {
				t.Errorf("table %q at %#x: checksum does not add up", tb[:4], addr)
			}
			if string(tb[10:16]) != "HYPERD" {
				t.Errorf("table %q: OEM id %q", tb[:4], tb[10:16])
			}
			return tb
		}
		xsdt := table(le.Uint64(r[24:]))
		if string(xsdt[:4]) != "XSDT" {
			t.Fatalf("XSDT signature %q", xsdt[:4])
		}
		sigs := map[string][]byte{}
		for off := 36; off < len(xsdt); off += 8 {
			tb := table(le.Uint64(xsdt[off:]))
			sigs[string(tb[:4])] = tb
		}
		fadt, madt := sigs["FACP"], sigs["APIC"]
		if fadt == nil || madt == nil || len(sigs) != 2 {
			t.Fatalf("XSDT lists %d tables, want FACP and APIC", len(sigs))
		}
		if len(fadt) != 276 || fadt[8] != 6 || fadt[131] != 5 {
			t.Errorf("FADT length %d revision %d.%d, want 276 / 6.5", len(fadt), fadt[8], fadt[131])
		}
		flags := le.Uint32(fadt[112:])
		for _, b := range []uint{20, 10, 4, 5} {
			if flags&(1<<b) == 0 {
				t.Errorf("FADT flags %#x lack bit %d", flags, b)
			}
		}
		if boot := le.Uint16(fadt[109:]); boot != 1<<2|1<<3|1<<5 {
			t.Errorf("IAPC_BOOT_ARCH %#x, want no VGA, no MSI, no CMOS RTC (0x2c)", boot)
		}
		if le.Uint32(fadt[40:]) != uint32(le.Uint64(fadt[140:])) {
			t.Errorf("DSDT %#x and X_DSDT %#x differ", le.Uint32(fadt[40:]), le.Uint64(fadt[140:]))
		}
		dsdt := table(le.Uint64(fadt[140:]))
		if string(dsdt[:4]) != "DSDT" || !bytes.Contains(dsdt, []byte("LNRO0005")) {
			t.Errorf("DSDT does not declare virtio-mmio devices")
		}
		if reset := fadt[116:128]; reset[0] != gasSystemIO || le.Uint64(reset[4:]) != 0x64 || fadt[128] != 0xfe {
			t.Errorf("reset register % x value %#x", reset, fadt[128])
		}
		if got := le.Uint64(fadt[248:]); got != 0x3c0 {
			t.Errorf("sleep control register at port %#x, want 0x3c0", got)
		}
		if got := le.Uint64(fadt[260:]); got != 0x3c1 {
			t.Errorf("sleep status register at port %#x, want 0x3c1", got)
		}
		if le.Uint32(madt[36:]) != LAPICAddr || le.Uint32(madt[40:])&1 != 1 {
			t.Errorf("MADT local APIC address %#x flags %#x", le.Uint32(madt[36:]), le.Uint32(madt[40:]))
		}
		n, ioapics, overrides := 0, 0, 0
		for off := 44; off < len(madt); off += int(madt[off+1]) {
			if madt[off+1] < 2 || off+int(madt[off+1]) > len(madt) {
				t.Fatalf("MADT entry at %d has length %d", off, madt[off+1])
			}
			e := madt[off : off+int(madt[off+1])]
			switch e[0] {
			case 0:
				if len(e) != 8 || int(e[2]) != n || int(e[3]) != n || le.Uint32(e[4:]) != 1 {
					t.Errorf("local APIC entry %d: % x", n, e)
				}
				n++
			case 1:
				if len(e) != 12 || int(e[2]) != cpus || le.Uint32(e[4:]) != IOAPICAddr || le.Uint32(e[8:]) != 0 {
					t.Errorf("I/O APIC entry % x", e)
				}
				ioapics++
			case 2:
				if len(e) != 10 || e[2] != 0 || e[3] != 0 || le.Uint32(e[4:]) != 2 {
					t.Errorf("interrupt source override % x, want ISA IRQ 0 -> GSI 2", e)
				}
				overrides++
			}
		}
		if n != cpus || ioapics != 1 || overrides != 1 {
			t.Errorf("MADT: %d CPUs, %d I/O APICs, %d overrides; want %d, 1, 1", n, ioapics, overrides, cpus)
		}
	}
}

func TestWriteACPIRejects(t *testing.T) {
	mem := make([]byte, 2<<20)
	for _, tc := range []struct {
		name string
		mem  []byte
		cfg  ACPIConfig
	}{
		{"no CPUs", mem, ACPIConfig{}},
		{"256 CPUs", mem, ACPIConfig{CPUs: 256}},
		{"memory below the BIOS area", make([]byte, 0xe0000), ACPIConfig{CPUs: 1}},
		{"257 devices", mem, ACPIConfig{CPUs: 1, Devices: make([]MMIODevice, 257)}},
	} {
		if _, err := WriteACPI(tc.mem, tc.cfg); err == nil {
			t.Errorf("%s: accepted", tc.name)
		}
	}
	// 256 devices fit in the area.
	cfg := ACPIConfig{CPUs: 255}
	for i := 0; i < 256; i++ {
		cfg.Devices = append(cfg.Devices, MMIODevice{Base: 0xd0000000 + uint64(i)*0x1000, Size: 0x200, GSI: 5 + uint32(i%19)})
	}
	if _, err := WriteACPI(mem, cfg); err != nil {
		t.Errorf("256 devices, 255 CPUs: %v", err)
	}
}

func TestChecksum(t *testing.T) {
	for _, b := range [][]byte{nil, {0}, {1}, {0xff, 0xff}, []byte("RSD PTR "), binary.LittleEndian.AppendUint64(nil, 0x0123456789abcdef)} {
		if c := checksum(b); sum(append(append([]byte(nil), b...), c)) != 0 {
			t.Errorf("checksum(% x) = %#x does not zero the sum", b, c)
		}
	}
}
