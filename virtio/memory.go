package virtio

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync/atomic"
	"unsafe"
)

// ErrOutOfBounds is returned (wrapped) by every Memory accessor whose range
// does not lie entirely inside guest memory.
var ErrOutOfBounds = errors.New("virtio: guest address out of bounds")

// Memory is guest physical memory: one contiguous region mapped at guest
// physical address 0. Every address and length coming from the guest is
// untrusted; all accessors check ranges without integer overflow.
type Memory struct {
	b []byte
}

// NewMemory wraps b (typically the mmap'ed guest RAM) as guest memory at GPA 0.
func NewMemory(b []byte) *Memory { return &Memory{b: b} }

// Size returns the size of guest memory in bytes.
func (m *Memory) Size() uint64 { return uint64(len(m.b)) }

// check reports whether [gpa, gpa+n) lies inside memory, overflow-safe.
func (m *Memory) check(gpa, n uint64) error {
	size := uint64(len(m.b))
	if gpa > size || n > size-gpa {
		return fmt.Errorf("%w: [%#x, +%#x) in %#x bytes", ErrOutOfBounds, gpa, n, size)
	}
	return nil
}

// Slice returns the n bytes of guest memory at gpa. The slice aliases guest
// memory (the guest may change it concurrently); its capacity is clipped to n.
func (m *Memory) Slice(gpa, n uint64) ([]byte, error) {
	if err := m.check(gpa, n); err != nil {
		return nil, err
	}
	return m.b[gpa : gpa+n : gpa+n], nil
}

// ReadU8 reads the byte at gpa.
func (m *Memory) ReadU8(gpa uint64) (uint8, error) {
	if err := m.check(gpa, 1); err != nil {
		return 0, err
	}
	return m.b[gpa], nil
}

// WriteU8 writes the byte at gpa.
func (m *Memory) WriteU8(gpa uint64, v uint8) error {
	if err := m.check(gpa, 1); err != nil {
		return err
	}
	m.b[gpa] = v
	return nil
}

// ReadU16 reads a little-endian uint16 at gpa.
func (m *Memory) ReadU16(gpa uint64) (uint16, error) {
	if err := m.check(gpa, 2); err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint16(m.b[gpa:]), nil
}

// WriteU16 writes a little-endian uint16 at gpa.
func (m *Memory) WriteU16(gpa uint64, v uint16) error {
	if err := m.check(gpa, 2); err != nil {
		return err
	}
	binary.LittleEndian.PutUint16(m.b[gpa:], v)
	return nil
}

// ReadU32 reads a little-endian uint32 at gpa.
func (m *Memory) ReadU32(gpa uint64) (uint32, error) {
	if err := m.check(gpa, 4); err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint32(m.b[gpa:]), nil
}

// WriteU32 writes a little-endian uint32 at gpa.
func (m *Memory) WriteU32(gpa uint64, v uint32) error {
	if err := m.check(gpa, 4); err != nil {
		return err
	}
	binary.LittleEndian.PutUint32(m.b[gpa:], v)
	return nil
}

// ReadU64 reads a little-endian uint64 at gpa.
func (m *Memory) ReadU64(gpa uint64) (uint64, error) {
	if err := m.check(gpa, 8); err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(m.b[gpa:]), nil
}

// WriteU64 writes a little-endian uint64 at gpa.
func (m *Memory) WriteU64(gpa uint64, v uint64) error {
	if err := m.check(gpa, 8); err != nil {
		return err
	}
	binary.LittleEndian.PutUint64(m.b[gpa:], v)
	return nil
}

// word returns a pointer to the naturally aligned 32-bit word at gpa, or nil
// if it is out of bounds or not 4-byte aligned in host memory.
func (m *Memory) word(gpa uint64) *uint32 {
	if m.check(gpa, 4) != nil {
		return nil
	}
	p := unsafe.Pointer(&m.b[gpa])
	if uintptr(p)%4 != 0 {
		return nil
	}
	return (*uint32)(p)
}

// LoadU32Acquire reads the little-endian uint32 at gpa with an atomic load
// when it is 4-byte aligned (a plain read otherwise). Ring indices are
// published this way so that the producer's earlier writes to descriptors and
// buffers are visible (and so the race detector sees the ordering).
func (m *Memory) LoadU32Acquire(gpa uint64) (uint32, error) {
	if p := m.word(gpa); p != nil {
		v := atomic.LoadUint32(p)
		// Host is little-endian on every platform with /dev/kvm we target
		// (amd64, arm64); convert explicitly anyway.
		var b [4]byte
		*(*uint32)(unsafe.Pointer(&b)) = v
		return binary.LittleEndian.Uint32(b[:]), nil
	}
	return m.ReadU32(gpa)
}

// StoreU32Release writes the little-endian uint32 at gpa with an atomic store
// when it is 4-byte aligned (a plain write otherwise).
func (m *Memory) StoreU32Release(gpa uint64, v uint32) error {
	if p := m.word(gpa); p != nil {
		var b [4]byte
		binary.LittleEndian.PutUint32(b[:], v)
		atomic.StoreUint32(p, *(*uint32)(unsafe.Pointer(&b)))
		return nil
	}
	return m.WriteU32(gpa, v)
}
