// serial_test.go tests SerialTransport's waits: for a device node that
// appears late (a virtio port shows up after virtio_console loaded) and for
// the host end of a port (POLLHUP until it is connected).
package agent

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// pty opens a pty master and returns it with the path of its slave.
func pty(t *testing.T) (*os.File, string) {
	t.Helper()
	ptm, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("open /dev/ptmx: %v", err)
	}
	t.Cleanup(func() { ptm.Close() })
	if err := unix.IoctlSetPointerInt(int(ptm.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(ptm.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	return ptm, filepath.Join("/dev/pts", strconv.Itoa(n))
}

func TestSerialListenWaitsForDevice(t *testing.T) {
	cases := []struct {
		name    string
		appear  time.Duration // the device node appears after this (<0: never)
		wait    time.Duration
		wantErr string
	}{
		{"present", 0, time.Second, ""},
		{"appears late", 200 * time.Millisecond, 10 * time.Second, ""},
		{"never appears", -1, 100 * time.Millisecond, "no such file"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, slave := pty(t)
			dev := filepath.Join(t.TempDir(), "vport0p1")
			switch {
			case c.appear == 0:
				if err := os.Symlink(slave, dev); err != nil {
					t.Fatal(err)
				}
			case c.appear > 0:
				tm := time.AfterFunc(c.appear, func() { os.Symlink(slave, dev) })
				defer tm.Stop()
			}
			ln, err := SerialTransport{Path: dev, Wait: c.wait}.Listen()
			if err == nil {
				ln.Close()
			}
			if c.wantErr == "" && err != nil {
				t.Fatalf("Listen: %v", err)
			}
			if c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr)) {
				t.Fatalf("Listen: %v, want an error with %q", err, c.wantErr)
			}
		})
	}
}

// A pipe's read end polls POLLHUP once its write end is closed, as a
// virtio port does while its host end is not connected.
func TestWaitHostConnected(t *testing.T) {
	cases := []struct {
		name      string
		connected bool // the write end stays open
	}{
		{"connected", true},
		{"hung up", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r, w, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			defer w.Close()
			if !c.connected {
				w.Close()
			}
			t0 := time.Now()
			err = waitHostConnected(int(r.Fd()), time.Now().Add(150*time.Millisecond))
			if c.connected && err != nil {
				t.Fatalf("waitHostConnected: %v", err)
			}
			if !c.connected {
				if err == nil || !strings.Contains(err.Error(), "not connected") {
					t.Fatalf("waitHostConnected: %v, want not connected", err)
				}
				if d := time.Since(t0); d < 150*time.Millisecond {
					t.Errorf("gave up after %v, before the deadline", d)
				}
			}
		})
	}
}

func TestMakeRaw(t *testing.T) {
	_, slave := pty(t)
	tty, err := os.OpenFile(slave, os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer tty.Close()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	cases := []struct {
		name string
		f    *os.File
		tty  bool
	}{
		{"pty slave", tty, true},
		{"pipe", r, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := makeRaw(int(c.f.Fd()))
			if err != nil || got != c.tty {
				t.Fatalf("makeRaw = %v, %v; want %v", got, err, c.tty)
			}
			if !c.tty {
				return
			}
			tio, err := unix.IoctlGetTermios(int(c.f.Fd()), unix.TCGETS)
			if err != nil {
				t.Fatal(err)
			}
			if tio.Lflag&(unix.ICANON|unix.ECHO) != 0 || tio.Oflag&unix.OPOST != 0 || tio.Cflag&unix.CSIZE != unix.CS8 {
				t.Errorf("not raw: lflag %#x oflag %#x cflag %#x", tio.Lflag, tio.Oflag, tio.Cflag)
			}
		})
	}
}
