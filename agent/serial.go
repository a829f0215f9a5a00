// serial.go owns the agent's serial transport: opening the guest's serial
// port or virtio port, raw mode for ttys, and waiting for the device and
// its host end before the mux session starts.
package agent

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"time"

	"github.com/hyperhq/hyperd-go/agent/mux"
	"golang.org/x/sys/unix"
)

// SerialTransport serves over a serial port or a virtio-serial port char
// device (/dev/vport0p1, /dev/ttyS1, /dev/hvc1). There is only one byte
// stream, so the connections of agent/PROTOCOL.md are multiplexed over it
// with agent/mux; the daemon side uses client.MuxDialer. A session lasts as
// long as the device stays open: there is no resynchronisation, so a daemon
// that lost the session cannot reattach (vsock and unix sockets can).
//
// The channel must not lose bytes, and not every device keeps that
// promise: QEMU's virtconsole (the guest's /dev/hvcN) and its 8250 UART
// (/dev/ttySN) drop what the guest writes while the host end of their
// chardev cannot take it (a full socket: a slow or descheduled reader),
// and the mux session then dies on a garbled frame. A virtserialport (the
// guest's /dev/vportNpM, not a tty) holds the guest's writes back instead;
// with a virtconsole, the host end's socket buffer must be larger than
// what the mux's credit windows let the guest have in flight (the
// e2e/guest harness does that: its virtserialport stalled requests for up
// to a minute under QEMU 7.2's TCG, a cause not found yet).
type SerialTransport struct {
	Path string
	// Wait bounds how long Listen waits for the device to appear and, for
	// a virtio port, for its host end to be connected (0: DeviceWait).
	Wait time.Duration
}

// DeviceWait is how long SerialTransport.Listen waits by default. A virtio
// port's device node appears only once the guest handled the host's
// PORT_ADD control message, asynchronously after virtio_console loaded,
// and the host end is known to be connected a control message later.
const DeviceWait = 30 * time.Second

// Listen implements Transport.
func (s SerialTransport) Listen() (net.Listener, error) {
	wait := s.Wait
	if wait == 0 {
		wait = DeviceWait
	}
	deadline := time.Now().Add(wait)
	f, err := openWhenPresent(s.Path, deadline)
	if err != nil {
		return nil, fmt.Errorf("serial transport: %w", err)
	}
	fd := int(f.Fd())
	tty, err := makeRaw(fd)
	if err == nil && !tty {
		err = waitHostConnected(fd, deadline)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("serial transport %s: %w", s.Path, err)
	}
	return mux.Server(f), nil
}

// pollInterval is how often Listen looks again for the device or its host
// end.
const pollInterval = 10 * time.Millisecond

// openWhenPresent opens path for reading and writing, waiting until the
// deadline while it does not exist yet.
func openWhenPresent(path string, deadline time.Time) (*os.File, error) {
	for {
		f, err := os.OpenFile(path, os.O_RDWR|unix.O_NOCTTY, 0)
		if err == nil || !errors.Is(err, fs.ErrNotExist) || time.Now().After(deadline) {
			return f, err
		}
		time.Sleep(pollInterval)
	}
}

// waitHostConnected waits until the deadline while fd reports a hang-up. A
// virtio port whose host end is not connected polls POLLHUP, and a read
// from it returns 0 — EOF for the mux, which would end the session before
// it started. Other char devices (a FIFO) do not report POLLHUP at all.
func waitHostConnected(fd int, deadline time.Time) error {
	for {
		p := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
		if _, err := unix.Poll(p, 0); err != nil && err != unix.EINTR {
			return fmt.Errorf("poll: %w", err)
		}
		if p[0].Revents&unix.POLLHUP == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return errors.New("the host end is not connected (POLLHUP)")
		}
		time.Sleep(pollInterval)
	}
}

// makeRaw puts a tty into raw 8-bit mode (no echo, no line discipline, no
// CR/LF translation) and reports true; other char devices and sockets are
// left alone (false).
func makeRaw(fd int) (tty bool, err error) {
	t, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err == unix.ENOTTY || err == unix.EINVAL {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	t.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON | unix.IXOFF
	t.Oflag &^= unix.OPOST
	t.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	t.Cflag &^= unix.CSIZE | unix.PARENB | unix.CRTSCTS
	t.Cflag |= unix.CS8 | unix.CLOCAL | unix.CREAD
	t.Cc[unix.VMIN] = 1
	t.Cc[unix.VTIME] = 0
	return true, unix.IoctlSetTermios(fd, unix.TCSETS, t)
}
