package virtio

import "sync"

// base holds what every device model shares: the lock serialising queue
// access, the active queues and the negotiated features.
type base struct {
	mu       sync.Mutex
	queues   []*Queue // nil until Activate, nil again after Reset
	features uint64
}

func (b *base) activate(qs []*Queue, features uint64) {
	b.mu.Lock()
	b.queues, b.features = qs, features
	b.mu.Unlock()
}

// queue returns active queue i or nil. Called with b.mu held.
func (b *base) queue(i int) *Queue {
	if i < 0 || i >= len(b.queues) {
		return nil
	}
	return b.queues[i]
}

// readConfigBytes copies the part of cfg at offset into data (zero beyond).
func readConfigBytes(cfg []byte, offset uint64, data []byte) {
	clear(data)
	if offset >= uint64(len(cfg)) {
		return
	}
	copy(data, cfg[offset:])
}
