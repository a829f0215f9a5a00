package guest

import (
	"errors"
	"fmt"
	"io"
	"os"
)

// The Linux x86 boot protocol (Documentation/arch/x86/boot.rst): the real
// mode setup header at offset 0x1f1 of a bzImage, the protected-mode kernel
// after (setup_sects+1)*512 bytes, booted through the 64-bit entry at
// load address + 0x200 with RSI pointing at boot_params ("the zero page").
const (
	setupHeaderOff = 0x1f1
	hdrMagic       = 0x53726448 // "HdrS" at 0x202
	minProtocol    = 0x20c      // 2.12: xloadflags with XLF_KERNEL_64
	xlfKernel64    = 1 << 0
	loadedHigh     = 1 << 0 // loadflags bit 0
	canUseHeap     = 1 << 7
)

type bzImage struct {
	setupSects    int
	protocol      uint16
	initrdAddrMax uint32
	end           uint64
	header        []byte // setup header bytes 0x1f1..end of the header
}

func loadBzImage(mem []byte, f *os.File) (*bzImage, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	hdr := make([]byte, 0x280)
	if _, err := f.ReadAt(hdr, 0); err != nil {
		return nil, fmt.Errorf("guest: reading the bzImage setup header: %w", err)
	}
	if le.Uint32(hdr[0x202:]) != hdrMagic {
		return nil, errors.New("guest: kernel is neither an ELF vmlinux nor a bzImage (no HdrS magic)")
	}
	b := &bzImage{setupSects: int(hdr[0x1f1]), protocol: le.Uint16(hdr[0x206:])}
	if b.setupSects == 0 {
		b.setupSects = 4
	}
	if b.protocol < minProtocol {
		return nil, fmt.Errorf("guest: bzImage boot protocol %#x, need %#x for the 64-bit entry", b.protocol, minProtocol)
	}
	if le.Uint16(hdr[0x236:])&xlfKernel64 == 0 {
		return nil, errors.New("guest: bzImage has no 64-bit entry point (XLF_KERNEL_64)")
	}
	if hdr[0x211]&loadedHigh == 0 {
		return nil, errors.New("guest: bzImage is not a loaded-high kernel")
	}
	b.initrdAddrMax = le.Uint32(hdr[0x22c:])
	// The header ends at 0x202 + the byte at 0x201 (boot.rst, "jump").
	hdrEnd := 0x202 + int(hdr[0x201])
	if hdrEnd > len(hdr) || hdrEnd < 0x268 {
		hdrEnd = 0x268
	}
	b.header = append([]byte(nil), hdr[setupHeaderOff:hdrEnd]...)
	off := int64(b.setupSects+1) * 512
	size := st.Size() - off
	if size <= 0 || uint64(size) > uint64(len(mem))-BzImageLoadAddr {
		return nil, fmt.Errorf("guest: bzImage payload of %d bytes does not fit", size)
	}
	if _, err := f.ReadAt(mem[BzImageLoadAddr:BzImageLoadAddr+uint64(size)], off); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("guest: reading the bzImage payload: %w", err)
	}
	// init_size (0x260) is the memory the kernel needs from its load address.
	b.end = BzImageLoadAddr + uint64(max(uint32(size), le.Uint32(hdr[0x260:])))
	return b, nil
}

// writeBootParams fills the zero page (Documentation/arch/x86/zero-page.rst).
func writeBootParams(mem []byte, b *bzImage, l *Loaded) {
	zp := mem[ZeroPageAddr : ZeroPageAddr+0x1000]
	clear(zp)
	copy(zp[setupHeaderOff:], b.header)
	zp[0x210] = 0xff // type_of_loader: undefined
	zp[0x211] |= canUseHeap
	le.PutUint16(zp[0x224:], 0xde00)               // heap_end_ptr
	le.PutUint32(zp[0x228:], CmdlineAddr)          // cmd_line_ptr
	le.PutUint32(zp[0x218:], uint32(l.InitrdAddr)) // ramdisk_image
	le.PutUint32(zp[0x21c:], uint32(l.InitrdSize)) // ramdisk_size
	le.PutUint64(zp[0x70:], l.RSDP)                // acpi_rsdp_addr
	n := min(len(l.MemoryMap), 128)
	zp[0x1e8] = byte(n) // e820_entries
	for i := 0; i < n; i++ {
		e := zp[0x2d0+20*i:]
		le.PutUint64(e[0:], l.MemoryMap[i].Addr)
		le.PutUint64(e[8:], l.MemoryMap[i].Size)
		le.PutUint32(e[16:], l.MemoryMap[i].Type)
	}
}
