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

type pioRange struct {
	base, size uint16
	dev        PIODevice
}

type mmioRange struct {
	base, size uint64
	dev        MMIODevice
}

// bus routes I/O exits to devices by address. Ranges are registered before
// the vCPUs start and never change afterwards, so lookups take no lock.
type bus struct {
	mu   sync.Mutex
	pio  []pioRange
	mmio []mmioRange
}

func (b *bus) addPIO(base, size uint16, d PIODevice) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, r := range b.pio {
		if base < r.base+r.size && r.base < base+size {
			return fmt.Errorf("vmm: port range %#x+%d overlaps %#x+%d", base, size, r.base, r.size)
		}
	}
	b.pio = append(b.pio, pioRange{base, size, d})
	sort.Slice(b.pio, func(i, j int) bool { return b.pio[i].base < b.pio[j].base })
	return nil
}

func (b *bus) addMMIO(base, size uint64, d MMIODevice) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, r := range b.mmio {
		if base < r.base+r.size && r.base < base+size {
			return fmt.Errorf("vmm: MMIO range %#x+%#x overlaps %#x+%#x", base, size, r.base, r.size)
		}
	}
	b.mmio = append(b.mmio, mmioRange{base, size, d})
	sort.Slice(b.mmio, func(i, j int) bool { return b.mmio[i].base < b.mmio[j].base })
	return nil
}

func (b *bus) findPIO(port uint16) (PIODevice, uint16) {
	i := sort.Search(len(b.pio), func(i int) bool { return b.pio[i].base+b.pio[i].size > port })
	if i < len(b.pio) && b.pio[i].base <= port {
		return b.pio[i].dev, port - b.pio[i].base
	}
	return nil, 0
}

func (b *bus) findMMIO(addr uint64) (MMIODevice, uint64) {
	i := sort.Search(len(b.mmio), func(i int) bool { return b.mmio[i].base+b.mmio[i].size > addr })
	if i < len(b.mmio) && b.mmio[i].base <= addr {
		return b.mmio[i].dev, addr - b.mmio[i].base
	}
	return nil, 0
}

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
