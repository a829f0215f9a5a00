// This file owns the network device's tap backend: opening a tap by name
// (TUNSETIFF with IFF_TAP|IFF_NO_PI|IFF_VNET_HDR) or adopting a tap fd
// someone else opened, setting its vnet header size (TUNSETVNETHDRSZ) and
// its offloads (TUNSETOFFLOAD). No vhost: frames go through read/write.

package virtio

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// Offload flags of TUNSETOFFLOAD, linux/if_tun.h: what the reader of the
// tap accepts (frames delivered with a partial checksum, TSO frames).
const (
	tunFCsum = 0x01 // TUN_F_CSUM
	tunFTSO4 = 0x02 // TUN_F_TSO4
	tunFTSO6 = 0x04 // TUN_F_TSO6
)

// tunDevice is the clone device tap file descriptors are opened from.
const tunDevice = "/dev/net/tun"

// Tap is a Linux tap device used as a NetBackend. Its fd is non-blocking
// and served by the Go poller, so Close interrupts a pending Read.
type Tap struct {
	f        *os.File
	name     string
	vnet     bool
	offloads uint64 // NetFGuest* the tap accepted in TUNSETOFFLOAD
}

// OpenTap opens (creating it if needed, which takes CAP_NET_ADMIN) the tap
// called name in the caller's network namespace, with IFF_NO_PI and a
// 12-byte virtio_net_hdr, and enables every offload it accepts. An empty
// name lets the kernel choose one (Name reports it).
func OpenTap(name string) (*Tap, error) {
	if len(name) >= unix.IFNAMSIZ {
		return nil, fmt.Errorf("tap %q: name longer than %d bytes", name, unix.IFNAMSIZ-1)
	}
	fd, err := unix.Open(tunDevice, unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("tap %q: %w", name, &os.PathError{Op: "open", Path: tunDevice, Err: err})
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("tap %q: %w", name, err)
	}
	ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		if errors.Is(err, unix.EPERM) {
			return nil, fmt.Errorf("tap %q: TUNSETIFF: %w (creating a tap needs CAP_NET_ADMIN, or the tap must exist and belong to this user)", name, err)
		}
		return nil, fmt.Errorf("tap %q: TUNSETIFF: %w", name, err)
	}
	t, err := newTap(fd, ifr.Name(), true)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	return t, nil
}

// AdoptTap takes over fd, a tap opened by another process (the daemon, in
// the pod's network namespace) and inherited. It must be a tap (not a
// tun) with IFF_NO_PI (checked as far as TUNGETIFF tells: some kernels
// report IFF_NO_PI for every tap). With IFF_VNET_HDR its header size is set to 12 and
// its offloads enabled; without it the device offers no offload. The fd
// becomes non-blocking and close-on-exec; the Tap owns it.
func AdoptTap(fd int) (*Tap, error) {
	if fd < 0 {
		return nil, fmt.Errorf("tap fd %d: not a file descriptor", fd)
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil {
		return nil, fmt.Errorf("tap fd %d: not open: %w", fd, err)
	}
	ifr, err := unix.NewIfreq("")
	if err != nil {
		return nil, err
	}
	if err := unix.IoctlIfreq(fd, unix.TUNGETIFF, ifr); err != nil {
		return nil, fmt.Errorf("tap fd %d: not an attached tun/tap device (TUNGETIFF: %w)", fd, err)
	}
	flags := ifr.Uint16()
	name := ifr.Name()
	switch {
	case flags&unix.IFF_TAP == 0:
		return nil, fmt.Errorf("tap fd %d (%s): a tun (IP) device, not a tap (Ethernet)", fd, name)
	case flags&unix.IFF_NO_PI == 0:
		return nil, fmt.Errorf("tap fd %d (%s): opened without IFF_NO_PI", fd, name)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		return nil, fmt.Errorf("tap fd %d: %w", fd, err)
	}
	unix.CloseOnExec(fd)
	return newTap(fd, name, flags&unix.IFF_VNET_HDR != 0)
}

// newTap configures the vnet header and offloads of an attached tap fd
// and wraps it; on error the caller still owns fd.
func newTap(fd int, name string, vnet bool) (*Tap, error) {
	t := &Tap{name: name, vnet: vnet}
	if vnet {
		// The tap's header is then struct virtio_net_hdr_mrg_rxbuf, the
		// same 12 bytes as a VERSION_1 virtio_net_hdr (§5.1.6).
		if err := unix.IoctlSetPointerInt(fd, unix.TUNSETVNETHDRSZ, NetHdrSize); err != nil {
			return nil, fmt.Errorf("tap %s: TUNSETVNETHDRSZ: %w", name, err)
		}
		// Enable the most the tap accepts (TSO needs CSUM).
		for _, try := range []uint64{netGuestOffloads, NetFGuestCsum, 0} {
			if setTapOffload(fd, try) == nil {
				t.offloads = try
				break
			}
		}
	}
	t.f = os.NewFile(uintptr(fd), "tap:"+name)
	return t, nil
}

// tunOffloadFlags maps NetFGuest* features to TUN_F_* flags.
func tunOffloadFlags(f uint64) int {
	var fl int
	if f&NetFGuestCsum != 0 {
		fl |= tunFCsum
		if f&NetFGuestTSO4 != 0 {
			fl |= tunFTSO4
		}
		if f&NetFGuestTSO6 != 0 {
			fl |= tunFTSO6
		}
	}
	return fl
}

func setTapOffload(fd int, f uint64) error {
	return unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, tunOffloadFlags(f))
}

// Name is the tap's interface name.
func (t *Tap) Name() string { return t.name }

// Read reads one frame (with its virtio_net_hdr when VnetHdr).
func (t *Tap) Read(p []byte) (int, error) { return t.f.Read(p) }

// Write writes one frame (with its virtio_net_hdr when VnetHdr); a tap
// takes a frame in a single write.
func (t *Tap) Write(p []byte) (int, error) { return t.f.Write(p) }

// Close closes the fd (a non-persistent tap disappears with it).
func (t *Tap) Close() error { return t.f.Close() }

// VnetHdr reports whether frames carry a virtio_net_hdr.
func (t *Tap) VnetHdr() bool { return t.vnet }

// GuestOffloads is what TUNSETOFFLOAD accepted when the tap was opened.
func (t *Tap) GuestOffloads() uint64 { return t.offloads }

// SetGuestOffloads sets the tap's offloads to the NetFGuest* features f
// (those of them it accepted at open). It is an ioctl: a jailed VMM's
// seccomp filter refuses it, and the device then copes in software.
func (t *Tap) SetGuestOffloads(f uint64) error {
	if !t.vnet {
		return errors.New("tap without IFF_VNET_HDR has no offloads")
	}
	rc, err := t.f.SyscallConn()
	if err != nil {
		return err
	}
	var ioErr error
	if err := rc.Control(func(fd uintptr) { ioErr = setTapOffload(int(fd), f&t.offloads) }); err != nil {
		return err
	}
	return ioErr
}
