// Leases: the pins that keep blobs written (or found) by an in-flight load, pull,
// commit or build safe from a concurrent GC until the image referencing them is
// registered.
package image

import "sync"

// A lease pins blob digests against GC. The rule that makes it hold: pin a digest
// BEFORE the blob is renamed into blobs/ or found there. GC runs entirely under
// s.mu and pin takes s.mu, so a GC either finished before the pin (and the caller
// then writes or finds the blob afresh) or starts after it (and sees the pin).
// Release once the image is registered (or the operation failed).
type lease struct {
	s        *Store
	mu       sync.Mutex
	digests  []string
	released bool
}

func (s *Store) newLease() *lease { return &lease{s: s} }

// pin protects digests from GC until release.
func (l *lease) pin(digests ...string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.released {
		panic("image: pin on a released lease")
	}
	l.s.mu.Lock()
	for _, d := range digests {
		l.s.pending[d]++
	}
	l.s.mu.Unlock()
	l.digests = append(l.digests, digests...)
}

// release drops every pin of the lease; it may be called more than once.
func (l *lease) release() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.released {
		return
	}
	l.released = true
	l.s.mu.Lock()
	for _, d := range l.digests {
		if l.s.pending[d]--; l.s.pending[d] <= 0 {
			delete(l.s.pending, d)
		}
	}
	l.s.mu.Unlock()
}
