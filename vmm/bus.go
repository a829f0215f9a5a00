package vmm

import (
	"fmt"
	"sort"
	"sync"
)

// PIODevice answers guest port I/O. port is relative to the device's base.
type PIODevice interface {
	PIORead(port uint16, data []byte)
	PIOWrite(port uint16, data []byte)
}

// MMIODevice answers guest memory-mapped I/O. offset is relative to the
// device's base address.
type MMIODevice interface {
	Read(offset uint64, data []byte)
	Write(offset uint64, data []byte)
}

// span is one device's address range on a bus.
type span[A uint16 | uint64, D any] struct {
	base, size A
	dev        D
}

// bus routes I/O exits to devices by address. Ranges are registered before
// the vCPUs start and never change afterwards, so lookups take no lock.
type bus struct {
	mu   sync.Mutex
	pio  []span[uint16, PIODevice]
	mmio []span[uint64, MMIODevice]
}

// insert adds a range to a sorted list unless it overlaps one there.
func insert[A uint16 | uint64, D any](list []span[A, D], base, size A, d D, what string) ([]span[A, D], error) {
	for _, r := range list {
		if base < r.base+r.size && r.base < base+size {
			return list, fmt.Errorf("vmm: %s range %#x+%#x overlaps %#x+%#x", what, base, size, r.base, r.size)
		}
	}
	list = append(list, span[A, D]{base, size, d})
	sort.Slice(list, func(i, j int) bool { return list[i].base < list[j].base })
	return list, nil
}

// lookup finds the range holding addr and the offset into it.
func lookup[A uint16 | uint64, D any](list []span[A, D], addr A) (D, A) {
	i := sort.Search(len(list), func(i int) bool { return list[i].base+list[i].size > addr })
	if i < len(list) && list[i].base <= addr {
		return list[i].dev, addr - list[i].base
	}
	var none D
	return none, 0
}

func (b *bus) addPIO(base, size uint16, d PIODevice) (err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.pio, err = insert(b.pio, base, size, d, "port")
	return err
}

func (b *bus) addMMIO(base, size uint64, d MMIODevice) (err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.mmio, err = insert(b.mmio, base, size, d, "MMIO")
	return err
}

func (b *bus) findPIO(port uint16) (PIODevice, uint16) { return lookup(b.pio, port) }

func (b *bus) findMMIO(addr uint64) (MMIODevice, uint64) { return lookup(b.mmio, addr) }

// uartPIO adapts the UART to the port bus (one byte per register).
type uartPIO struct{ u *UART }

func (p uartPIO) PIORead(port uint16, data []byte) {
	for i := range data {
		data[i] = p.u.In(port + uint16(i))
	}
}

func (p uartPIO) PIOWrite(port uint16, data []byte) {
	for i, v := range data {
		p.u.Out(port+uint16(i), v)
	}
}
