package guest

import (
	"encoding/binary"
	"fmt"
)

// A small ACPI Machine Language encoder: just what our DSDT needs.
// Encodings are from ACPI 6.5 chapter 20 ("ACPI Machine Language
// Specification") and resource descriptors from 6.4 ("Resource Data Types
// for ACPI").

// AML opcodes (ACPI 6.5, 20.3 "AML Byte Stream Byte Values").
const (
	amlZeroOp      = 0x00
	amlOneOp       = 0x01
	amlNameOp      = 0x08
	amlBytePrefix  = 0x0a
	amlWordPrefix  = 0x0b
	amlDWordPrefix = 0x0c
	amlStringPref  = 0x0d
	amlScopeOp     = 0x10
	amlBufferOp    = 0x11
	amlPackageOp   = 0x12
	amlExtOpPrefix = 0x5b
	amlDeviceOp    = 0x82 // after ExtOpPrefix
	amlRootChar    = 0x5c // '\'
)

// pkgLength encodes a PkgLength (ACPI 6.5, 20.2.4) for a package whose
// content (after the PkgLength itself) is n bytes. The encoded length
// counts the PkgLength bytes too.
func pkgLength(n int) []byte {
	for size := 1; size <= 4; size++ {
		total := n + size
		if size == 1 {
			if total < 0x40 {
				return []byte{byte(total)}
			}
			continue
		}
		if total < 1<<(4+8*(size-1)) {
			b := []byte{byte((size-1)<<6) | byte(total&0xf)}
			for i := 1; i < size; i++ {
				b = append(b, byte(total>>(4+8*(i-1))))
			}
			return b
		}
	}
	panic(fmt.Sprintf("aml: package of %d bytes is too large", n))
}

// nameSeg checks and returns a 4-character NameSeg (ACPI 6.5, 20.2.2),
// padding with '_'.
func nameSeg(s string) []byte {
	if len(s) == 0 || len(s) > 4 {
		panic("aml: bad name segment " + s)
	}
	for len(s) < 4 {
		s += "_"
	}
	return []byte(s)
}

// nameString encodes "\NAME" (rooted) or "NAME" (relative, one segment).
func nameString(s string) []byte {
	if len(s) > 0 && s[0] == '\\' {
		return append([]byte{amlRootChar}, nameSeg(s[1:])...)
	}
	return nameSeg(s)
}

// amlInteger encodes an integer with the smallest prefix.
func amlInteger(v uint64) []byte {
	switch {
	case v == 0:
		return []byte{amlZeroOp}
	case v == 1:
		return []byte{amlOneOp}
	case v <= 0xff:
		return []byte{amlBytePrefix, byte(v)}
	case v <= 0xffff:
		return []byte{amlWordPrefix, byte(v), byte(v >> 8)}
	case v <= 0xffffffff:
		b := []byte{amlDWordPrefix, 0, 0, 0, 0}
		binary.LittleEndian.PutUint32(b[1:], uint32(v))
		return b
	}
	b := []byte{0x0e, 0, 0, 0, 0, 0, 0, 0, 0} // QWordPrefix
	binary.LittleEndian.PutUint64(b[1:], v)
	return b
}

func amlString(s string) []byte {
	return append(append([]byte{amlStringPref}, s...), 0)
}

// eisaID compresses a 7-character PNP id such as "PNP0501" into the
// 32-bit EISA id form (ACPI 6.5, 6.1.5 "_HID").
func eisaID(id string) uint32 {
	if len(id) != 7 {
		panic("aml: bad EISA id " + id)
	}
	c := func(i int) uint32 { return uint32(id[i]-0x40) & 0x1f }
	h := func(i int) uint32 {
		v := id[i]
		switch {
		case v >= '0' && v <= '9':
			return uint32(v - '0')
		case v >= 'A' && v <= 'F':
			return uint32(v-'A') + 10
		}
		panic("aml: bad EISA id " + id)
	}
	vendor := c(0)<<10 | c(1)<<5 | c(2)
	product := h(3)<<12 | h(4)<<8 | h(5)<<4 | h(6)
	// Stored big-endian byte by byte: vendor hi, vendor lo, product hi, product lo.
	b := []byte{byte(vendor >> 8), byte(vendor), byte(product >> 8), byte(product)}
	return binary.LittleEndian.Uint32(b)
}

func amlName(name string, value []byte) []byte {
	return append(append([]byte{amlNameOp}, nameString(name)...), value...)
}

func amlScope(name string, body ...[]byte) []byte {
	return amlPkg([]byte{amlScopeOp}, nameString(name), body)
}

func amlDevice(name string, body ...[]byte) []byte {
	return amlPkg([]byte{amlExtOpPrefix, amlDeviceOp}, nameString(name), body)
}

func amlPkg(op, name []byte, body [][]byte) []byte {
	content := append([]byte(nil), name...)
	for _, b := range body {
		content = append(content, b...)
	}
	out := append([]byte(nil), op...)
	out = append(out, pkgLength(len(content))...)
	return append(out, content...)
}

func amlBuffer(data []byte) []byte {
	content := append(amlInteger(uint64(len(data))), data...)
	out := []byte{amlBufferOp}
	out = append(out, pkgLength(len(content))...)
	return append(out, content...)
}

// amlPackage encodes Package(){elements...} of integers.
func amlPackage(elems ...uint64) []byte {
	content := []byte{byte(len(elems))}
	for _, e := range elems {
		content = append(content, amlInteger(e)...)
	}
	out := []byte{amlPackageOp}
	out = append(out, pkgLength(len(content))...)
	return append(out, content...)
}

// Resource descriptors (ACPI 6.5, 6.4).

// resIO is an I/O Port Descriptor (6.4.2.5) with 16-bit decode.
func resIO(base uint16, length uint8) []byte {
	return []byte{0x47, 0x01, byte(base), byte(base >> 8), byte(base), byte(base >> 8), 0x01, length}
}

// resIRQNoFlags is an IRQ Descriptor (6.4.2.1), 2-byte form: edge, high.
func resIRQNoFlags(irq uint) []byte {
	mask := uint16(1) << irq
	return []byte{0x22, byte(mask), byte(mask >> 8)}
}

// resMemory32Fixed is a 32-bit Fixed Memory Range Descriptor (6.4.3.4).
func resMemory32Fixed(base, size uint32, writable bool) []byte {
	b := []byte{0x86, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	if writable {
		b[3] = 1
	}
	binary.LittleEndian.PutUint32(b[4:], base)
	binary.LittleEndian.PutUint32(b[8:], size)
	return b
}

// resExtendedIRQ is an Extended Interrupt Descriptor (6.4.3.6) for one
// interrupt: resource consumer, edge or level, active high, exclusive.
func resExtendedIRQ(gsi uint32, edge bool) []byte {
	b := []byte{0x89, 6, 0, 0x01, 1, 0, 0, 0, 0}
	if edge {
		b[3] |= 0x02
	}
	binary.LittleEndian.PutUint32(b[5:], gsi)
	return b
}

// resourceTemplate ends a descriptor list with an End Tag (6.4.2.9) whose
// checksum byte 0 means "treat as correct".
func resourceTemplate(descs ...[]byte) []byte {
	var b []byte
	for _, d := range descs {
		b = append(b, d...)
	}
	return amlBuffer(append(b, 0x79, 0x00))
}
