package guest

import (
	"fmt"
	"testing"
)

// allOnesHost has every feature bit set in the leaves we mask, plus the
// topology and PMU/XSAVE leaves, as a KVM_GET_SUPPORTED_CPUID answer might.
func allOnesHost() []CPUIDEntry {
	ones := func(fn, idx uint32) CPUIDEntry {
		return CPUIDEntry{Function: fn, Index: idx, EAX: ^uint32(0), EBX: ^uint32(0), ECX: ^uint32(0), EDX: ^uint32(0)}
	}
	return []CPUIDEntry{
		{Function: 0, EAX: 0x1f, EBX: 0x756e6547, ECX: 0x6c65746e, EDX: 0x49656e69},
		{Function: 1, EAX: 0x806f8, EBX: 0x00ff0800, ECX: ^uint32(0), EDX: ^uint32(0)},
		{Function: 4, Index: 0, Flags: CPUIDFlagSignificantIndex, EAX: 0xfc004121},
		{Function: 4, Index: 1, Flags: CPUIDFlagSignificantIndex, EAX: 0x0},
		{Function: 6, EAX: 0x77, ECX: 9},
		ones(7, 0), ones(7, 1),
		{Function: 0xa, EAX: 0x08300805},
		{Function: 0xb, Index: 0, Flags: CPUIDFlagSignificantIndex, EAX: 1, EBX: 2, ECX: 0x100, EDX: 7},
		{Function: 0xb, Index: 1, Flags: CPUIDFlagSignificantIndex, EAX: 7, EBX: 64, ECX: 0x201, EDX: 7},
		{Function: 0xb, Index: 2, Flags: CPUIDFlagSignificantIndex, ECX: 2, EDX: 7},
		{Function: 0xd, Index: 0, Flags: CPUIDFlagSignificantIndex, EAX: 0x2e7},
		{Function: 0x12, EAX: 3},
		{Function: 0x14, EAX: 1},
		{Function: 0x80000000, EAX: 0x80000008},
		ones(0x80000001, 0),
		ones(0x80000008, 0),
	}
}

func find(es []CPUIDEntry, fn, idx uint32) (CPUIDEntry, bool) {
	for _, e := range es {
		if e.Function == fn && e.Index == idx {
			return e, true
		}
	}
	return CPUIDEntry{}, false
}

// TestCPUIDMasks checks every documented bit: always-masked bits are clear
// in both profiles, emulator bits only in the emulated one.
func TestCPUIDMasks(t *testing.T) {
	for _, tc := range []struct {
		name     string
		emulated bool
	}{{"hardware", false}, {"emulated", true}} {
		out := GuestCPUID(allOnesHost(), 0, CPUIDProfile{CPUs: 1, Emulated: tc.emulated})
		check := func(list []bit, wantClear bool) {
			for _, m := range list {
				e, ok := find(out, m.fn, m.index)
				if !ok {
					t.Errorf("%s: leaf %#x.%d missing", tc.name, m.fn, m.index)
					continue
				}
				if set := *e.reg(m.reg)&(1<<m.n) != 0; set == wantClear {
					t.Errorf("%s: leaf %#x.%d E%cX bit %d (%s) set=%v", tc.name, m.fn, m.index, m.reg-'a'+'A', m.n, m.why, set)
				}
			}
		}
		check(maskedAlways, true)
		check(maskedEmulated, tc.emulated)
		// Bits nobody masks stay as the host has them: SSE2 (leaf 1 EDX
		// 26), TSC-deadline (leaf 1 ECX 24), SMEP (leaf 7 EBX 7).
		l1, _ := find(out, 1, 0)
		l7, _ := find(out, 7, 0)
		if l1.EDX&(1<<26) == 0 || l1.ECX&(1<<24) == 0 || l7.EBX&(1<<7) == 0 {
			t.Errorf("%s: unmasked bits lost: leaf 1 %#x/%#x, leaf 7 EBX %#x", tc.name, l1.ECX, l1.EDX, l7.EBX)
		}
	}
}

func TestCPUIDMaskTable(t *testing.T) {
	seen := map[string]string{}
	for _, list := range [][]bit{maskedAlways, maskedEmulated} {
		for _, m := range list {
			key := fmt.Sprintf("%#x.%d.%c.%d", m.fn, m.index, m.reg, m.n)
			if prev, dup := seen[key]; dup {
				t.Errorf("bit %s masked twice (%q, %q)", key, prev, m.why)
			}
			seen[key] = m.why
			if m.why == "" || m.n > 31 || m.reg < 'a' || m.reg > 'd' {
				t.Errorf("bad mask entry %+v", m)
			}
		}
	}
}

func TestCPUIDTopology(t *testing.T) {
	for _, tc := range []struct {
		cpus, cpu int
		coreBits  uint32
	}{
		{1, 0, 0}, {2, 1, 1}, {3, 2, 2}, {4, 3, 2}, {8, 5, 3}, {64, 63, 6},
	} {
		name := fmt.Sprintf("vCPU %d of %d", tc.cpu, tc.cpus)
		out := GuestCPUID(allOnesHost(), tc.cpu, CPUIDProfile{CPUs: tc.cpus})
		l1, _ := find(out, 1, 0)
		if id := l1.EBX >> 24; id != uint32(tc.cpu) {
			t.Errorf("%s: initial APIC ID %d", name, id)
		}
		if n := l1.EBX >> 16 & 0xff; n != uint32(tc.cpus) {
			t.Errorf("%s: logical processor count %d", name, n)
		}
		if htt := l1.EDX&(1<<28) != 0; htt != (tc.cpus > 1) {
			t.Errorf("%s: HTT %v", name, htt)
		}
		if l1.EBX&0xffff != 0x0800 {
			t.Errorf("%s: CLFLUSH line size/brand bits changed: %#x", name, l1.EBX)
		}
		if l1.ECX&(1<<31) == 0 {
			t.Errorf("%s: hypervisor bit clear", name)
		}
		smt, _ := find(out, 0xb, 0)
		core, _ := find(out, 0xb, 1)
		end, _ := find(out, 0xb, 2)
		if smt.EDX != uint32(tc.cpu) || core.EDX != uint32(tc.cpu) || end.EDX != uint32(tc.cpu) {
			t.Errorf("%s: x2APIC ids %d/%d/%d", name, smt.EDX, core.EDX, end.EDX)
		}
		if smt.EAX != 0 || smt.EBX != 1 || smt.ECX != 0x100 {
			t.Errorf("%s: SMT level %+v, want 1 thread per core", name, smt)
		}
		if core.EAX != tc.coreBits || core.EBX != uint32(tc.cpus) || core.ECX != 0x201 {
			t.Errorf("%s: core level %+v, want shift %d, %d processors", name, core, tc.coreBits, tc.cpus)
		}
		if end.EBX != 0 || end.ECX&0xff00 != 0 {
			t.Errorf("%s: subleaf 2 %+v does not end the topology", name, end)
		}
		c4, _ := find(out, 4, 0)
		if c4.EAX>>26 != uint32(tc.cpus-1) || c4.EAX>>14&0xfff != 0 || c4.EAX&0x3fff != 0x0121 {
			t.Errorf("%s: leaf 4 EAX %#x", name, c4.EAX)
		}
		if c4n, _ := find(out, 4, 1); c4n.EAX != 0 {
			t.Errorf("%s: null cache subleaf became %#x", name, c4n.EAX)
		}
		amd, _ := find(out, 0x80000008, 0)
		if amd.ECX&0xff != uint32(tc.cpus-1) {
			t.Errorf("%s: leaf 0x80000008 ECX %#x", name, amd.ECX)
		}
	}
}

func TestCPUIDLeaves(t *testing.T) {
	kvmHost := append(allOnesHost(),
		CPUIDEntry{Function: 0x40000000, EAX: 0x40000001, EBX: 0x4b4d564b, ECX: 0x564b4d56, EDX: 0x4d},
		CPUIDEntry{Function: 0x40000001, EAX: 0x01007afb})
	for _, tc := range []struct {
		name      string
		host      []CPUIDEntry
		emulated  bool
		absent    []uint32
		present   []uint32
		kvmFeatEA uint32
	}{
		{"hardware", allOnesHost(), false, []uint32{0xa, 0x12, 0x14}, []uint32{0xd, 0x40000000, 0x40000001}, 0},
		{"emulated", allOnesHost(), true, []uint32{0xa, 0xd, 0x12, 0x14}, []uint32{0x40000000, 0x40000001}, 0},
		{"host offers KVM leaves", kvmHost, true, []uint32{0xa}, []uint32{0x40000000, 0x40000001}, 0x01007afb},
	} {
		out := GuestCPUID(tc.host, 0, CPUIDProfile{CPUs: 2, Emulated: tc.emulated})
		for _, fn := range tc.absent {
			if _, ok := find(out, fn, 0); ok {
				t.Errorf("%s: leaf %#x present", tc.name, fn)
			}
		}
		for _, fn := range tc.present {
			if _, ok := find(out, fn, 0); !ok {
				t.Errorf("%s: leaf %#x missing", tc.name, fn)
			}
		}
		sig, _ := find(out, 0x40000000, 0)
		if sig.EAX != 0x40000001 || string(le.AppendUint32(le.AppendUint32(le.AppendUint32(nil, sig.EBX), sig.ECX), sig.EDX)) != "KVMKVMKVM\x00\x00\x00" {
			t.Errorf("%s: KVM signature leaf %+v", tc.name, sig)
		}
		if feat, _ := find(out, 0x40000001, 0); feat.EAX != tc.kvmFeatEA {
			t.Errorf("%s: KVM features %#x, want %#x", tc.name, feat.EAX, tc.kvmFeatEA)
		}
		n := 0
		for _, e := range out {
			if e.Function == 0x40000000 {
				n++
			}
		}
		if n != 1 {
			t.Errorf("%s: %d KVM signature leaves", tc.name, n)
		}
		if l6, _ := find(out, 6, 0); l6 != (CPUIDEntry{Function: 6}) {
			t.Errorf("%s: thermal/power leaf 6 not cleared: %+v", tc.name, l6)
		}
	}
}

func TestCPUIDLeavesHostAlone(t *testing.T) {
	host := allOnesHost()
	before := fmt.Sprint(host)
	GuestCPUID(host, 3, CPUIDProfile{CPUs: 4, Emulated: true})
	if fmt.Sprint(host) != before {
		t.Errorf("GuestCPUID changed the host entries")
	}
}
