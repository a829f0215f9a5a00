// This file owns the parts of a pod setup that give a VM its own identity
// when it was restored from a template (a snapshot of a booted VM whose
// agent was ready, shared by every pod started from it): its wall clock
// (PodSetup.Time) and its kernel RNG (PodSetup.Entropy, .Generation).
// Neither is the agent's to change in local mode, where it runs on the
// host: there both are refused (ownsMachine).

package agent

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"
	"unsafe"

	"github.com/hyperhq/hyperd-go/agent/protocol"
	"golang.org/x/sys/unix"
)

// randomDev is the device the RNG ioctls go to (either /dev/random or
// /dev/urandom takes them; both are the same driver).
const randomDev = "/dev/urandom"

// ownsMachine reports whether the agent is the init of its own (virtual)
// machine, whose clock and RNG a pod setup may change: the VM's agent
// (cmd/hyper-agent vmMain) is the one given a PowerOff; a local-mode agent
// runs on the host and has none.
func (s *Server) ownsMachine() bool { return s.cfg.PowerOff != nil }

// validateIdentity refuses what setIdentity could not do: Time or
// Entropy in an agent that does not own its machine, a negative Time, too
// much Entropy.
func validateIdentity(p protocol.PodSetup, owns bool) *protocol.Error {
	if p.Time < 0 {
		return protocol.Errorf(protocol.CodeBadRequest, "bad time %d (Unix nanoseconds, 0 = leave the clock)", p.Time)
	}
	if len(p.Entropy) > protocol.EntropyMax {
		return protocol.Errorf(protocol.CodeBadRequest, "entropy of %d bytes, at most %d", len(p.Entropy), protocol.EntropyMax)
	}
	if !owns && (p.Time != 0 || len(p.Entropy) > 0) {
		return protocol.Errorf(protocol.CodeBadRequest, "time and entropy are for an agent that owns its machine (a VM), not for one on the host")
	}
	return nil
}

// identity is the agent's memory of the RNG generations it has seen.
type identity struct {
	mu  sync.Mutex // serialises setIdentity
	gen uint64     // last PodSetup.Generation seen, 0 = none
}

// clockStep reports whether a guest clock reading now should be set to
// the host's time host: when they are ClockSlack or more apart.
func clockStep(now, host time.Time) bool {
	d := host.Sub(now)
	return d >= protocol.ClockSlack || d <= -protocol.ClockSlack
}

// rngPlan decides what a setup does to the kernel RNG, given the last
// generation seen (0 = none), the setup's generation and how much entropy
// it carries: a repeat of the last generation does nothing (a second
// setup with the same data changes nothing); otherwise entropy is mixed
// in, and the CRNG is reseeded when there was entropy or the generation
// is a new one.
func rngPlan(last, gen uint64, entropy int) (add, reseed bool) {
	if gen != 0 && gen == last {
		return false, false
	}
	return entropy > 0, entropy > 0 || gen != 0
}

// setIdentity applies the clock and RNG parts of a validated setup.
// An agent that does not own its machine leaves both alone (its
// Generation is meaningless; Time and Entropy were refused).
func (s *Server) setIdentity(p protocol.PodSetup) *protocol.Error {
	if !s.ownsMachine() {
		return nil
	}
	if p.Time != 0 {
		if host := time.Unix(0, p.Time); clockStep(time.Now(), host) {
			if err := setClock(host); err != nil {
				return protocol.Errorf(protocol.CodeInternal, "set the clock to %s: %v", host.UTC().Format(time.RFC3339Nano), err)
			}
		}
	}
	s.id.mu.Lock()
	defer s.id.mu.Unlock()
	add, reseed := rngPlan(s.id.gen, p.Generation, len(p.Entropy))
	if add {
		// the host's crypto/rand bytes are full entropy: credited bit for bit
		if err := addEntropy(randomDev, p.Entropy, 8*len(p.Entropy)); err != nil {
			return protocol.Errorf(protocol.CodeInternal, "add entropy: %v", err)
		}
	}
	if reseed {
		// ENODATA: the CRNG is not initialised yet; its first seeding
		// takes the pool as it is now, with this VM's own inputs
		if err := reseedCRNG(randomDev); err != nil && !errors.Is(err, unix.ENODATA) {
			return protocol.Errorf(protocol.CodeInternal, "reseed the kernel RNG: %v", err)
		}
	}
	if p.Generation != 0 {
		s.id.gen = p.Generation
	}
	return nil
}

// setClock sets CLOCK_REALTIME (clock_settime(2); CAP_SYS_TIME). The
// monotonic clocks do not move.
func setClock(t time.Time) error {
	ts := unix.NsecToTimespec(t.UnixNano())
	return unix.ClockSettime(unix.CLOCK_REALTIME, &ts)
}

// randPoolInfo encodes struct rand_pool_info of linux/random.h, the
// argument of RNDADDENTROPY:
//
//	struct rand_pool_info {
//		int	entropy_count;	/* bits credited */
//		int	buf_size;	/* bytes in buf */
//		__u32	buf[0];
//	};
//
// The kernel reads buf_size bytes of buf (write_pool_user), so data needs
// no padding to a multiple of 4.
func randPoolInfo(data []byte, creditBits int) []byte {
	b := make([]byte, 8+len(data))
	binary.NativeEndian.PutUint32(b[0:], uint32(int32(creditBits)))
	binary.NativeEndian.PutUint32(b[4:], uint32(int32(len(data))))
	copy(b[8:], data)
	return b
}

// addEntropy mixes data into the kernel's input pool through dev and
// credits creditBits of entropy: ioctl RNDADDENTROPY (linux/random.h:
// _IOW('R', 0x03, int[2]); CAP_SYS_ADMIN). Once the pool holds enough
// credited bits the kernel's CRNG is initialised; after that a credit
// alone does not reseed it (reseedCRNG does).
func addEntropy(dev string, data []byte, creditBits int) error {
	if len(data) == 0 {
		return nil
	}
	f, err := os.OpenFile(dev, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	arg := randPoolInfo(data, creditBits)
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.RNDADDENTROPY, uintptr(unsafe.Pointer(&arg[0]))); errno != 0 {
		return fmt.Errorf("%s: RNDADDENTROPY: %w", dev, errno)
	}
	return nil
}

// reseedCRNG makes the kernel reseed its CRNG from the input pool now
// instead of at its next scheduled reseed: ioctl RNDRESEEDCRNG
// (linux/random.h: _IO('R', 0x07); CAP_SYS_ADMIN; ENODATA while the CRNG
// is not initialised yet).
func reseedCRNG(dev string) error {
	f, err := os.OpenFile(dev, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.RNDRESEEDCRNG, 0); errno != 0 {
		return fmt.Errorf("%s: RNDRESEEDCRNG: %w", dev, errno)
	}
	return nil
}
