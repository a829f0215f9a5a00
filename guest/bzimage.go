package guest

import (
	"errors"
	"fmt"
	"io"
)

// The Linux x86 boot protocol (Documentation/arch/x86/boot.rst): the real
// mode setup header at offset 0x1f1 of a bzImage ("THE REAL-MODE KERNEL
// HEADER"), the protected-mode kernel after (setup_sects+1)*512 bytes
// ("LOADING THE REST OF THE KERNEL"), booted through the 64-bit entry at
// load address + 0x200 with RSI pointing at boot_params, the zero page
// (Documentation/arch/x86/zero-page.rst), which starts with a copy of the
// setup header at the same offsets ("64-bit BOOT PROTOCOL").
const (
	hdrSetupSects    = 0x1f1 // setup_sects (1 byte; 0 means 4)
	hdrJump          = 0x200 // jump instruction; the byte at 0x201 + 0x202 is the header's end
	hdrMagicOff      = 0x202 // header: "HdrS"
	hdrVersion       = 0x206 // boot protocol version
	hdrTypeOfLoader  = 0x210
	hdrLoadflags     = 0x211
	hdrRamdiskImage  = 0x218
	hdrRamdiskSize   = 0x21c
	hdrCmdLinePtr    = 0x228
	hdrInitrdAddrMax = 0x22c
	hdrXloadflags    = 0x236
	hdrCmdlineSize   = 0x238 // protocol 2.06+
	hdrPrefAddress   = 0x258 // protocol 2.10+
	hdrInitSize      = 0x260 // protocol 2.10+
	hdrMinEnd        = 0x268 // end of the header fields we read

	hdrMagic     = 0x53726448 // "HdrS"
	minProtocol  = 0x20c      // 2.12: xloadflags with XLF_KERNEL_64
	xlfKernel64  = 1 << 0     // xloadflags: has the 64-bit entry at +0x200
	loadedHigh   = 1 << 0     // loadflags: protected-mode code at 0x100000
	loaderUndef  = 0xff       // type_of_loader: "undefined" (no assigned boot loader ID)
	entry64Delta = 0x200

	// Zero page fields outside the setup header (zero-page.rst).
	zpACPIRSDPAddr = 0x070 // acpi_rsdp_addr (8 bytes)
	zpE820Entries  = 0x1e8 // e820_entries (1 byte)
	zpE820Table    = 0x2d0 // e820_table[128], 20-byte boot_e820_entry {addr u64, size u64, type u32}
	zpE820Max      = 128
)

type bzImage struct {
	protocol      uint16
	initrdAddrMax uint32
	cmdlineSize   uint32
	end           uint64 // past the decompressed kernel's memory (see loadBzImage)
	header        []byte // setup header bytes from 0x1f1 to the header's end
}

func loadBzImage(mem []byte, f image) (*bzImage, error) {
	hdr := make([]byte, 0x280)
	if _, err := f.ReadAt(hdr, 0); err != nil {
		return nil, fmt.Errorf("guest: reading the bzImage setup header: %w", err)
	}
	if le.Uint32(hdr[hdrMagicOff:]) != hdrMagic {
		return nil, errors.New("guest: kernel is neither an ELF vmlinux nor a bzImage (no HdrS magic)")
	}
	b := &bzImage{protocol: le.Uint16(hdr[hdrVersion:])}
	setupSects := int(hdr[hdrSetupSects])
	if setupSects == 0 {
		setupSects = 4
	}
	if b.protocol < minProtocol {
		return nil, fmt.Errorf("guest: bzImage boot protocol %#x, need %#x for the 64-bit entry", b.protocol, minProtocol)
	}
	if le.Uint16(hdr[hdrXloadflags:])&xlfKernel64 == 0 {
		return nil, errors.New("guest: bzImage has no 64-bit entry point (XLF_KERNEL_64)")
	}
	if hdr[hdrLoadflags]&loadedHigh == 0 {
		return nil, errors.New("guest: bzImage is not a loaded-high kernel")
	}
	b.initrdAddrMax = le.Uint32(hdr[hdrInitrdAddrMax:])
	b.cmdlineSize = le.Uint32(hdr[hdrCmdlineSize:])
	hdrEnd := hdrJump + 2 + int(hdr[hdrJump+1])
	if hdrEnd > len(hdr) || hdrEnd < hdrMinEnd {
		hdrEnd = hdrMinEnd
	}
	b.header = append([]byte(nil), hdr[hdrSetupSects:hdrEnd]...)
	off := int64(setupSects+1) * 512
	size := f.Size() - off
	if size <= 0 || uint64(size) > uint64(len(mem))-BzImageLoadAddr {
		return nil, fmt.Errorf("guest: bzImage payload of %d bytes does not fit in guest memory", size)
	}
	if _, err := f.ReadAt(mem[BzImageLoadAddr:BzImageLoadAddr+uint64(size)], off); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("guest: reading the bzImage payload: %w", err)
	}
	// The decompressor runs from the load address and decompresses to
	// pref_address when it is loaded below it (a relocatable kernel
	// otherwise stays at its aligned load address); init_size is what it
	// needs from there ("init_size" in boot.rst).
	initSize := uint64(le.Uint32(hdr[hdrInitSize:]))
	pref := max(le.Uint64(hdr[hdrPrefAddress:]), BzImageLoadAddr)
	b.end = max(BzImageLoadAddr+uint64(size), pref+initSize)
	if b.end > uint64(len(mem)) {
		return nil, fmt.Errorf("guest: the bzImage needs memory up to %#x (pref_address + init_size), the guest has %#x", b.end, len(mem))
	}
	return b, nil
}

// writeBootParams fills the zero page: the setup header copied from the
// image, then what a boot loader must or may set (boot.rst "DETAILS OF
// HEADER FIELDS": type_of_loader, cmd_line_ptr, ramdisk_image/size;
// zero-page.rst: e820_entries, e820_table, acpi_rsdp_addr).
func writeBootParams(mem []byte, b *bzImage, l *Loaded) error {
	zp := mem[ZeroPageAddr : ZeroPageAddr+0x1000]
	clear(zp)
	copy(zp[hdrSetupSects:], b.header)
	if n := uint32(len(cstring(mem[CmdlineAddr:]))); b.cmdlineSize != 0 && n > b.cmdlineSize {
		return fmt.Errorf("guest: command line of %d bytes, the kernel takes at most %d", n, b.cmdlineSize)
	}
	if l.InitrdSize > 0 && l.InitrdAddr+l.InitrdSize > uint64(b.initrdAddrMax)+1 {
		return fmt.Errorf("guest: initrd at %#x+%#x ends above the kernel's initrd_addr_max %#x", l.InitrdAddr, l.InitrdSize, b.initrdAddrMax)
	}
	if len(l.MemoryMap) > zpE820Max {
		return fmt.Errorf("guest: %d e820 entries, the zero page holds %d", len(l.MemoryMap), zpE820Max)
	}
	zp[hdrTypeOfLoader] = loaderUndef
	le.PutUint32(zp[hdrCmdLinePtr:], CmdlineAddr)
	le.PutUint32(zp[hdrRamdiskImage:], uint32(l.InitrdAddr))
	le.PutUint32(zp[hdrRamdiskSize:], uint32(l.InitrdSize))
	le.PutUint64(zp[zpACPIRSDPAddr:], l.RSDP)
	zp[zpE820Entries] = byte(len(l.MemoryMap))
	for i, r := range l.MemoryMap {
		e := zp[zpE820Table+20*i:]
		le.PutUint64(e[0:], r.Addr)
		le.PutUint64(e[8:], r.Size)
		le.PutUint32(e[16:], r.Type)
	}
	return nil
}

// cstring returns b up to its first NUL.
func cstring(b []byte) []byte {
	for i, c := range b {
		if c == 0 {
			return b[:i]
		}
	}
	return b
}
