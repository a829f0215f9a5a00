package guest

import (
	"bytes"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

func TestPkgLength(t *testing.T) {
	for _, tc := range []struct {
		n    int
		want []byte
	}{
		{0, []byte{0x01}},
		{10, []byte{0x0b}},
		{62, []byte{0x3f}},
		{63, []byte{0x41, 0x04}},          // 65 = 0x41
		{0xffd, []byte{0x4f, 0xff}},       // 0xfff in two bytes
		{0xffe, []byte{0x81, 0x00, 0x01}}, // 0x1001 needs three
	} {
		if got := pkgLength(tc.n); !bytes.Equal(got, tc.want) {
			t.Errorf("pkgLength(%d) = % x, want % x", tc.n, got, tc.want)
		}
	}
}

func TestAMLEncodings(t *testing.T) {
	for _, tc := range []struct {
		name string
		got  []byte
		want []byte
	}{
		{"EisaId PNP0501", le.AppendUint32(nil, eisaID("PNP0501")), []byte{0x41, 0xd0, 0x05, 0x01}},
		{"EisaId PNP0A03", le.AppendUint32(nil, eisaID("PNP0A03")), []byte{0x41, 0xd0, 0x0a, 0x03}},
		{"integer 0", amlInteger(0), []byte{0x00}},
		{"integer 1", amlInteger(1), []byte{0x01}},
		{"integer 0x3f8", amlInteger(0x3f8), []byte{0x0b, 0xf8, 0x03}},
		{"string", amlString("LNRO0005"), append([]byte{0x0d}, "LNRO0005\x00"...)},
		{"Name(\\_S5, Package(){5,5,0,0})", amlName("\\_S5", amlPackage(5, 5, 0, 0)),
			[]byte{0x08, 0x5c, '_', 'S', '5', '_', 0x12, 0x08, 0x04, 0x0a, 0x05, 0x0a, 0x05, 0x00, 0x00}},
		{"IO(Decode16, 0x3f8, 0x3f8, 1, 8)", resIO(0x3f8, 8), []byte{0x47, 0x01, 0xf8, 0x03, 0xf8, 0x03, 0x01, 0x08}},
		{"IRQNoFlags(){4}", resIRQNoFlags(4), []byte{0x22, 0x10, 0x00}},
		{"Memory32Fixed(RW, 0xd0000000, 0x200)", resMemory32Fixed(0xd0000000, 0x200, true),
			[]byte{0x86, 0x09, 0x00, 0x01, 0x00, 0x00, 0x00, 0xd0, 0x00, 0x02, 0x00, 0x00}},
		{"Interrupt(Consumer, Edge, High, Exclusive){5}", resExtendedIRQ(5, true),
			[]byte{0x89, 0x06, 0x00, 0x03, 0x01, 0x05, 0x00, 0x00, 0x00}},
	} {
		if !bytes.Equal(tc.got, tc.want) {
			t.Errorf("%s = % x, want % x", tc.name, tc.got, tc.want)
		}
	}
}

func testACPI() ACPIConfig {
	return ACPIConfig{
		CPUs:   2,
		Serial: true,
		Devices: []MMIODevice{
			{Base: 0xd0000000, Size: 0x200, GSI: 5},
			{Base: 0xd0001000, Size: 0x200, GSI: 6},
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

// TestACPITables writes the tables and walks them as a guest would: RSDP
// checksums, XSDT entries, each table's signature and checksum, the MADT's
// processors, the FADT's DSDT pointer and hardware-reduced flag.
func TestACPITables(t *testing.T) {
	mem := make([]byte, 2<<20)
	rsdpAddr, err := WriteACPI(mem, testACPI())
	if err != nil {
		t.Fatal(err)
	}
	r := mem[rsdpAddr : rsdpAddr+36]
	if string(r[:8]) != "RSD PTR " || sum(r[:20]) != 0 || sum(r) != 0 || r[15] != 2 {
		t.Fatalf("bad RSDP % x", r)
	}
	table := func(addr uint64) []byte {
		n := binary.LittleEndian.Uint32(mem[addr+4:])
		tb := mem[addr : addr+uint64(n)]
		if sum(tb) != 0 {
			t.Errorf("table %q at %#x: checksum does not add up", tb[:4], addr)
		}
		return tb
	}
	xsdt := table(binary.LittleEndian.Uint64(r[24:]))
	if string(xsdt[:4]) != "XSDT" {
		t.Fatalf("XSDT signature %q", xsdt[:4])
	}
	sigs := map[string][]byte{}
	for off := 36; off < len(xsdt); off += 8 {
		tb := table(binary.LittleEndian.Uint64(xsdt[off:]))
		sigs[string(tb[:4])] = tb
	}
	fadt, madt := sigs["FACP"], sigs["APIC"]
	if fadt == nil || madt == nil {
		t.Fatalf("XSDT lists %v, want FACP and APIC", len(sigs))
	}
	if len(fadt) != 276 || fadt[8] != 6 {
		t.Errorf("FADT length %d revision %d, want 276 / 6", len(fadt), fadt[8])
	}
	if flags := binary.LittleEndian.Uint32(fadt[112:]); flags&(1<<20) == 0 {
		t.Errorf("FADT flags %#x lack HW_REDUCED_ACPI", flags)
	}
	dsdt := table(binary.LittleEndian.Uint64(fadt[140:]))
	if string(dsdt[:4]) != "DSDT" || !bytes.Contains(dsdt, []byte("LNRO0005")) {
		t.Errorf("DSDT does not declare virtio-mmio devices")
	}
	if got := binary.LittleEndian.Uint64(fadt[248:]); got != 0x3c0 {
		t.Errorf("sleep control register at port %#x, want 0x3c0", got)
	}
	cpus := 0
	for off := 44; off+2 <= len(madt); off += int(madt[off+1]) {
		if madt[off+1] == 0 {
			t.Fatal("MADT entry of length 0")
		}
		if madt[off] == 0 && madt[off+4]&1 != 0 {
			if int(madt[off+3]) != cpus {
				t.Errorf("local APIC %d has APIC ID %d", cpus, madt[off+3])
			}
			cpus++
		}
	}
	if cpus != 2 {
		t.Errorf("MADT declares %d enabled CPUs, want 2", cpus)
	}
}

// TestDSDTDisassembles feeds our DSDT to ACPICA's disassembler, the same
// interpreter family the Linux kernel uses, and checks what it understood.
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
		`Device (V000)`, `Device (V001)`, `Name (_HID, "LNRO0005")`,
		`Memory32Fixed (ReadWrite,`, `0xD0001000,`, `Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive, ,, )`,
		`Name (\_S5, Package (0x04)`,
	} {
		if !strings.Contains(string(dsl), want) {
			t.Errorf("disassembled DSDT lacks %q:\n%s", want, dsl)
		}
	}
}

func TestFindPVHNote(t *testing.T) {
	note := func(name string, typ uint32, desc []byte) []byte {
		b := le.AppendUint32(nil, uint32(len(name)+1))
		b = le.AppendUint32(b, uint32(len(desc)))
		b = le.AppendUint32(b, typ)
		b = append(b, name...)
		b = append(b, 0)
		for len(b)%4 != 0 {
			b = append(b, 0)
		}
		b = append(b, desc...)
		for len(b)%4 != 0 {
			b = append(b, 0)
		}
		return b
	}
	for _, tc := range []struct {
		name  string
		notes []byte
		want  uint64
		ok    bool
	}{
		{"xen entry", note("Xen", 18, le.AppendUint32(nil, 0x1000123)), 0x1000123, true},
		{"after other notes", append(note("GNU", 3, make([]byte, 20)), note("Xen", 18, le.AppendUint64(nil, 0x2000000))...), 0x2000000, true},
		{"wrong owner", note("Lin", 18, le.AppendUint32(nil, 1)), 0, false},
		{"other xen note", note("Xen", 5, le.AppendUint32(nil, 1)), 0, false},
		{"truncated", note("Xen", 18, le.AppendUint32(nil, 1))[:14], 0, false},
		{"huge namesz", append(le.AppendUint32(nil, 0xffffffff), make([]byte, 8)...), 0, false},
	} {
		got, ok := findPVHNote(tc.notes, le)
		if got != tc.want || ok != tc.ok {
			t.Errorf("%s: %#x %v, want %#x %v", tc.name, got, ok, tc.want, tc.ok)
		}
	}
}

func TestGuestCPUID(t *testing.T) {
	host := []CPUIDEntry{
		{Function: 0, EAX: 0xd},
		{Function: 1, EBX: 0xff0800, ECX: 1<<13 | 1<<26 | 1<<27 | 1<<21 | 1<<3 | 1<<0, EDX: 1},
		{Function: 7, EBX: 1<<5 | 1<<7, ECX: 1 << 16},
		{Function: 0xa, EAX: 0x7300403},
		{Function: 0xd, EAX: 7},
	}
	for _, tc := range []struct {
		name      string
		p         CPUIDProfile
		cpu       int
		wantECX1  uint32
		wantLeafD bool
	}{
		{"hardware", CPUIDProfile{CPUs: 2}, 1, 1<<13 | 1<<26 | 1<<27 | 1<<21 | 1<<0 | 1<<31, true},
		{"emulated", CPUIDProfile{CPUs: 4, Emulated: true}, 3, 1<<0 | 1<<31, false},
	} {
		out := GuestCPUID(host, tc.cpu, tc.p)
		leaves := map[uint32]CPUIDEntry{}
		for _, e := range out {
			leaves[e.Function] = e
		}
		l1 := leaves[1]
		if l1.ECX != tc.wantECX1 {
			t.Errorf("%s: leaf 1 ECX %#x, want %#x", tc.name, l1.ECX, tc.wantECX1)
		}
		if id := l1.EBX >> 24; id != uint32(tc.cpu) {
			t.Errorf("%s: APIC ID %d, want %d", tc.name, id, tc.cpu)
		}
		if n := l1.EBX >> 16 & 0xff; n != uint32(tc.p.CPUs) {
			t.Errorf("%s: logical CPUs %d, want %d", tc.name, n, tc.p.CPUs)
		}
		if _, ok := leaves[0xa]; ok {
			t.Errorf("%s: PMU leaf 0xa not removed", tc.name)
		}
		if _, ok := leaves[0xd]; ok != tc.wantLeafD {
			t.Errorf("%s: leaf 0xd present %v, want %v", tc.name, ok, tc.wantLeafD)
		}
		if leaves[7].ECX&(1<<16) != 0 {
			t.Errorf("%s: LA57 not masked", tc.name)
		}
		if leaves[0x40000000].EBX != 0x4b4d564b {
			t.Errorf("%s: no KVM signature leaf", tc.name)
		}
		if tc.p.Emulated && leaves[7].EBX&(1<<5) != 0 {
			t.Errorf("%s: AVX2 visible on an emulated host", tc.name)
		}
	}
}

// kernelPath finds the kernel `make kernel` produced.
func kernelPath(t *testing.T) string {
	if p := os.Getenv("HYPERD_KERNEL"); p != "" {
		return p
	}
	_, file, _, _ := runtime.Caller(0)
	p := filepath.Join(filepath.Dir(file), "..", "build", "vmlinux")
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("guest kernel not found at %s: run `make kernel` (or set HYPERD_KERNEL): %v", p, err)
	}
	return p
}

// TestLoadRealKernel loads the Debian vmlinux from `make kernel` with an
// initrd and checks the PVH entry and start_info.
func TestLoadRealKernel(t *testing.T) {
	k := kernelPath(t)
	initrd := filepath.Join(t.TempDir(), "initrd")
	if err := os.WriteFile(initrd, bytes.Repeat([]byte{0xa5}, 100000), 0o644); err != nil {
		t.Fatal(err)
	}
	mem := make([]byte, 256<<20)
	l, err := Load(mem, Config{Kernel: k, Initrd: initrd, Cmdline: "console=ttyS0", ACPI: testACPI()})
	if err != nil {
		t.Fatal(err)
	}
	if l.Entry.Mode != "pvh" || l.Entry.RIP == 0 || l.Entry.RIP >= l.KernelEnd {
		t.Errorf("entry %+v, kernel end %#x", l.Entry, l.KernelEnd)
	}
	si := mem[StartInfoAddr:]
	if binary.LittleEndian.Uint32(si) != startInfoMagic || binary.LittleEndian.Uint32(si[12:]) != 1 {
		t.Errorf("start_info magic/modules wrong: % x", si[:16])
	}
	if l.InitrdAddr%4096 != 0 || l.InitrdAddr < l.KernelEnd || l.InitrdAddr+l.InitrdSize > uint64(len(mem)) || mem[l.InitrdAddr] != 0xa5 {
		t.Errorf("initrd at %#x+%d (kernel ends %#x)", l.InitrdAddr, l.InitrdSize, l.KernelEnd)
	}
	if got := string(mem[CmdlineAddr : CmdlineAddr+13]); got != "console=ttyS0" || mem[CmdlineAddr+13] != 0 {
		t.Errorf("cmdline %q", got)
	}
	t.Logf("PVH entry %#x, kernel [%#x, %#x), initrd at %#x", l.Entry.RIP, HighMemStart, l.KernelEnd, l.InitrdAddr)
}

func TestLoadRejects(t *testing.T) {
	dir := t.TempDir()
	junk := filepath.Join(dir, "junk")
	os.WriteFile(junk, []byte("this is not a kernel at all, not even close................................"), 0o644)
	mem := make([]byte, 32<<20)
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"missing kernel", Config{Kernel: filepath.Join(dir, "nope"), ACPI: testACPI()}, "no such file"},
		{"not a kernel", Config{Kernel: junk, ACPI: testACPI()}, "reading the bzImage setup header"},
		{"huge cmdline", Config{Kernel: junk, Cmdline: strings.Repeat("x", CmdlineMax), ACPI: testACPI()}, "command line"},
		{"no cpus", Config{Kernel: junk, ACPI: ACPIConfig{}}, "vCPUs"},
	} {
		_, err := Load(mem, tc.cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want it to mention %q", tc.name, err, tc.want)
		}
	}
	if _, err := Load(make([]byte, 1<<20), Config{Kernel: junk, ACPI: testACPI()}); err == nil {
		t.Errorf("1 MiB of memory accepted")
	}
}
