package agent

import (
	"fmt"
	"net"
	"os"

	"github.com/hyperhq/hyperd-go/agent/mux"
	"golang.org/x/sys/unix"
)

// SerialTransport serves over a serial port or virtio-console char device
// (/dev/ttyS1, /dev/hvc1, /dev/vport0p1). There is only one byte stream, so
// the connections of agent/PROTOCOL.md are multiplexed over it with
// agent/mux; the daemon side uses client.MuxDialer. A session lasts as long
// as the device stays open: there is no resynchronisation, so a daemon that
// lost the session cannot reattach (vsock and unix sockets can).
type SerialTransport struct{ Path string }

// Listen implements Transport.
func (s SerialTransport) Listen() (net.Listener, error) {
	f, err := os.OpenFile(s.Path, os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		return nil, fmt.Errorf("serial transport: %w", err)
	}
	if err := makeRaw(int(f.Fd())); err != nil {
		f.Close()
		return nil, fmt.Errorf("serial transport %s: %w", s.Path, err)
	}
	return mux.Server(f), nil
}

// makeRaw puts a tty into raw 8-bit mode (no echo, no line discipline, no
// CR/LF translation); other char devices and sockets are left alone.
func makeRaw(fd int) error {
	t, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err == unix.ENOTTY || err == unix.EINVAL {
		return nil
	}
	if err != nil {
		return err
	}
	t.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON | unix.IXOFF
	t.Oflag &^= unix.OPOST
	t.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	t.Cflag &^= unix.CSIZE | unix.PARENB | unix.CRTSCTS
	t.Cflag |= unix.CS8 | unix.CLOCAL | unix.CREAD
	t.Cc[unix.VMIN] = 1
	t.Cc[unix.VTIME] = 0
	return unix.IoctlSetTermios(fd, unix.TCSETS, t)
}
