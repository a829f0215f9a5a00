package guest

import (
	"bytes"
	"strings"
	"testing"
)

// A synthetic ELF64 kernel, laid out by hand after the ELF gABI ("ELF
// Header", "Program Header"): a 64-byte file header, 56-byte program
// headers, then the segment contents.
type testSeg struct {
	typ          uint32 // PT_LOAD = 1, PT_NOTE = 4
	paddr, vaddr uint64
	data         []byte
	memsz        uint64 // 0: len(data)
}

func mkELF(machine uint16, entry uint64, segs ...testSeg) []byte {
	const ehsize, phentsize = 64, 56
	h := make([]byte, ehsize)
	copy(h, "\x7fELF")
	h[4], h[5], h[6] = 2, 1, 1 // ELFCLASS64, ELFDATA2LSB, EV_CURRENT
	le.PutUint16(h[16:], 2)    // ET_EXEC
	le.PutUint16(h[18:], machine)
	le.PutUint32(h[20:], 1)
	le.PutUint64(h[24:], entry)
	le.PutUint64(h[32:], ehsize) // e_phoff
	le.PutUint16(h[52:], ehsize)
	le.PutUint16(h[54:], phentsize)
	le.PutUint16(h[56:], uint16(len(segs)))
	le.PutUint16(h[58:], 64) // e_shentsize; no sections
	off := uint64(ehsize + phentsize*len(segs))
	var body []byte
	for _, s := range segs {
		ph := make([]byte, phentsize)
		memsz := s.memsz
		if memsz == 0 {
			memsz = uint64(len(s.data))
		}
		le.PutUint32(ph[0:], s.typ)
		le.PutUint32(ph[4:], 5) // PF_R|PF_X
		le.PutUint64(ph[8:], off+uint64(len(body)))
		le.PutUint64(ph[16:], s.vaddr)
		le.PutUint64(ph[24:], s.paddr)
		le.PutUint64(ph[32:], uint64(len(s.data)))
		le.PutUint64(ph[40:], memsz)
		le.PutUint64(ph[48:], 4)
		h = append(h, ph...)
		body = append(body, s.data...)
		for len(body)%8 != 0 {
			body = append(body, 0)
		}
	}
	return append(h, body...)
}

// elfNote is one ELF note: namesz, descsz, type, name and desc padded to 4.
func elfNote(name string, typ uint32, desc []byte) []byte {
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

const (
	emX8664 = 62
	em386   = 3
	ptLoad  = 1
	ptNote  = 4
)

// testKernel is a small PVH kernel: text at 16 MiB (virtual at the
// kernel's usual high mapping), data plus bss after it, the Xen note.
func testKernel(pvhEntry uint64) []byte {
	text := bytes.Repeat([]byte{0x90}, 5000) // nops
	data := []byte("kernel data")
	notes := elfNote("GNU", 3, make([]byte, 20))
	if pvhEntry != 0 {
		notes = append(notes, elfNote("Xen", xenElfnotePhys32Entry, le.AppendUint32(nil, uint32(pvhEntry)))...)
	}
	return mkELF(emX8664, 0xffffffff81000000,
		testSeg{typ: ptLoad, paddr: 0x1000000, vaddr: 0xffffffff81000000, data: text},
		testSeg{typ: ptLoad, paddr: 0x1200000, vaddr: 0xffffffff81200000, data: data, memsz: 0x3000},
		testSeg{typ: ptNote, data: notes},
	)
}

func TestLoadELF(t *testing.T) {
	for _, tc := range []struct {
		name      string
		elf       []byte
		memSize   int
		wantPVH   uint64
		wantStart uint64
		wantEnd   uint64
		wantErr   string
	}{
		{"pvh kernel", testKernel(0x1000123), 32 << 20, 0x1000123, 0x1000000, 0x1203000, ""},
		{"no pvh note", testKernel(0), 32 << 20, 0, 0x1000000, 0x1203000, ""},
		{"8-byte note", mkELF(emX8664, 0x1000000,
			testSeg{typ: ptLoad, paddr: 0x1000000, data: []byte{0xf4}},
			testSeg{typ: ptNote, data: elfNote("Xen", 18, le.AppendUint64(nil, 0x1000000))}),
			32 << 20, 0x1000000, 0x1000000, 0x1000001, ""},
		{"segment beyond memory", testKernel(0x1000123), 0x1201000, 0, 0, 0, "does not fit"},
		{"filesz above memsz", mkELF(emX8664, 0, testSeg{typ: ptLoad, paddr: 0x1000000, data: make([]byte, 16), memsz: 8}),
			32 << 20, 0, 0, 0, "filesz"},
		{"i386", mkELF(em386, 0, testSeg{typ: ptLoad, paddr: 0x1000000, data: []byte{0}}), 32 << 20, 0, 0, 0, "want ELFCLASS64 x86-64"},
		{"nothing to load", mkELF(emX8664, 0, testSeg{typ: ptNote, data: elfNote("Xen", 18, le.AppendUint32(nil, 1))}),
			32 << 20, 0, 0, 0, "no loadable segments"},
		{"not ELF", []byte("MZ this is something else entirely, not an ELF file at all......"), 32 << 20, 0, 0, 0, "not an ELF"},
	} {
		mem := bytes.Repeat([]byte{0xee}, tc.memSize)
		k, err := LoadELF(mem, bytes.NewReader(tc.elf))
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%s: error %v, want %q", tc.name, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if k.PVHEntry != tc.wantPVH || k.Start != tc.wantStart || k.End != tc.wantEnd {
			t.Errorf("%s: PVH %#x [%#x,%#x), want %#x [%#x,%#x)", tc.name, k.PVHEntry, k.Start, k.End, tc.wantPVH, tc.wantStart, tc.wantEnd)
		}
		if tc.name == "pvh kernel" {
			if k.Entry != 0xffffffff81000000 {
				t.Errorf("ELF entry %#x", k.Entry)
			}
			if mem[0x1000000] != 0x90 || mem[0x1000000+4999] != 0x90 || mem[0x1000000+5000] != 0xee {
				t.Errorf("text not loaded at its physical address")
			}
			if string(mem[0x1200000:0x120000b]) != "kernel data" {
				t.Errorf("data segment: %q", mem[0x1200000:0x120000b])
			}
			if !bytes.Equal(mem[0x120000b:0x1203000], make([]byte, 0x3000-11)) {
				t.Errorf("bss (memsz beyond filesz) not zeroed")
			}
			if mem[0x1203000] != 0xee {
				t.Errorf("wrote past the last segment")
			}
		}
	}
}

func TestFindPVHNote(t *testing.T) {
	for _, tc := range []struct {
		name  string
		notes []byte
		want  uint64
		ok    bool
	}{
		{"xen entry", elfNote("Xen", 18, le.AppendUint32(nil, 0x1000123)), 0x1000123, true},
		{"after other notes", append(elfNote("GNU", 3, make([]byte, 20)), elfNote("Xen", 18, le.AppendUint64(nil, 0x2000000))...), 0x2000000, true},
		{"after other xen notes", append(elfNote("Xen", 6, []byte("linux\x00")), elfNote("Xen", 18, le.AppendUint32(nil, 0x3000000))...), 0x3000000, true},
		{"wrong owner", elfNote("Lin", 18, le.AppendUint32(nil, 1)), 0, false},
		{"other xen note", elfNote("Xen", 5, le.AppendUint32(nil, 1)), 0, false},
		{"odd descsz", elfNote("Xen", 18, []byte{1, 2}), 0, false},
		{"truncated", elfNote("Xen", 18, le.AppendUint32(nil, 1))[:14], 0, false},
		{"huge namesz", append(le.AppendUint32(nil, 0xffffffff), make([]byte, 8)...), 0, false},
		{"huge descsz", append(append(le.AppendUint32(nil, 4), le.AppendUint32(nil, 0xfffffff0)...), make([]byte, 8)...), 0, false},
		{"empty", nil, 0, false},
	} {
		got, ok := findPVHNote(tc.notes, le)
		if got != tc.want || ok != tc.ok {
			t.Errorf("%s: %#x %v, want %#x %v", tc.name, got, ok, tc.want, tc.ok)
		}
	}
}
