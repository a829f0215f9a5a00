// This file tests the control socket of `hyperd vm run` (vm_control.go)
// over a real unix socket: attaching a disk to an empty slot and the
// interrupt it raises, a repeated attach, and every malformed or refused
// request, with no descriptor leaked whatever was sent.

package main

import (
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hyperhq/hyperd-go/sandbox/kvmdrv"
	"github.com/hyperhq/hyperd-go/virtio"
)

// openFDs counts this process's open descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// sendRaw sends one message with fds and returns the answer.
func sendRaw(t *testing.T, sock string, msg []byte, fds ...int) string {
	t.Helper()
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	if _, _, err := c.WriteMsgUnix(msg, oob, nil); err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestVMControl(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(img, make([]byte, 64*virtio.SectorSize), 0o600); err != nil {
		t.Fatal(err)
	}
	boot, err := virtio.OpenBlk(img, true)
	if err != nil {
		t.Fatal(err)
	}
	// block devices 0 (a boot-time disk), 1 and 2 (slots); the rng device
	// between them does not count
	slot1, slot2 := virtio.NewBlkSlot(), virtio.NewBlkSlot()
	devs := []virtio.Device{boot, virtio.NewRng(), slot1, slot2}
	defer closeDevices(devs)
	sock := filepath.Join(dir, "control.sock")
	ctl, err := listenControl(sock, devs, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(sock)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("control socket mode %v (%v), want 0600", st.Mode().Perm(), err)
	}
	changed := make(chan virtio.Device, 4)
	go ctl.serve(func(d virtio.Device) error { changed <- d; return nil })
	defer ctl.Close()

	open := func(flag int) int {
		f, err := os.OpenFile(img, flag|os.O_CREATE, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		fd, err := unix.Dup(int(f.Fd()))
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		return fd
	}
	dirFD := func() int {
		fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		return fd
	}
	pipeFD := func() int {
		var p [2]int
		if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
			t.Fatal(err)
		}
		unix.Close(p[1])
		return p[0]
	}
	for _, tc := range []struct {
		name    string
		msg     string
		fds     func() []int
		want    string // the answer's prefix
		changed virtio.Device
	}{
		{name: "no descriptor", msg: "ATTACH 1 ro a\n", fds: func() []int { return nil }, want: "ERR a request carries 0 descriptors"},
		{name: "two descriptors", msg: "ATTACH 1 ro a\n", fds: func() []int { return []int{open(os.O_RDONLY), open(os.O_RDONLY)} }, want: "ERR a request carries 2 descriptors"},
		{name: "too many descriptors", msg: "ATTACH 1 ro a\n", fds: func() []int {
			var fds []int
			for range controlMaxFDs + 3 {
				fds = append(fds, open(os.O_RDONLY))
			}
			return fds
		}, want: "ERR a request with more than"},
		{name: "garbage", msg: "HELLO\n", fds: func() []int { return []int{open(os.O_RDONLY)} }, want: "ERR control: want ATTACH"},
		{name: "too long", msg: "ATTACH 1 ro " + strings.Repeat("a", 200) + "\n", fds: func() []int { return []int{open(os.O_RDONLY)} }, want: "ERR control: request of"},
		{name: "no such slot", msg: "ATTACH 3 ro a\n", fds: func() []int { return []int{open(os.O_RDONLY)} }, want: "ERR slot 3: the VM has 3 block devices"},
		{name: "boot-time disk", msg: "ATTACH 0 ro a\n", fds: func() []int { return []int{open(os.O_RDONLY)} }, want: "ERR block device 0 is a boot-time disk"},
		{name: "rw disk, ro file", msg: "ATTACH 1 rw a\n", fds: func() []int { return []int{open(os.O_RDONLY)} }, want: "ERR virtio-blk: a writable disk's file is open read-only"},
		{name: "directory", msg: "ATTACH 1 ro a\n", fds: func() []int { return []int{dirFD()} }, want: "ERR virtio-blk: the disk is not a regular file"},
		{name: "pipe", msg: "ATTACH 1 ro a\n", fds: func() []int { return []int{pipeFD()} }, want: "ERR virtio-blk: the disk is not a regular file"},
		{name: "attach", msg: "ATTACH 1 ro disk-a\n", fds: func() []int { return []int{open(os.O_RDONLY)} }, want: "OK 1\n", changed: slot1},
		{name: "repeated", msg: "ATTACH 1 ro disk-a\n", fds: func() []int { return []int{open(os.O_RDONLY)} }, want: "OK 1\n"},
		{name: "slot taken", msg: "ATTACH 1 ro disk-b\n", fds: func() []int { return []int{open(os.O_RDONLY)} }, want: "ERR slot 1 already holds disk disk-a"},
		{name: "same id, other mode", msg: "ATTACH 1 rw disk-a\n", fds: func() []int { return []int{open(os.O_RDWR)} }, want: "ERR slot 1 already holds disk disk-a"},
		{name: "attach rw", msg: "ATTACH 2 rw disk-c\n", fds: func() []int { return []int{open(os.O_RDWR)} }, want: "OK 2\n", changed: slot2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := openFDs(t)
			fds := tc.fds()
			got := sendRaw(t, sock, []byte(tc.msg), fds...)
			for _, fd := range fds {
				unix.Close(fd) // ours; the VM process has its own copy
			}
			if !strings.HasPrefix(got, tc.want) || !strings.HasSuffix(got, "\n") {
				t.Fatalf("answer %q, want %q...", got, tc.want)
			}
			select {
			case d := <-changed:
				if d != tc.changed {
					t.Fatalf("configuration change for %v, want %v", d, tc.changed)
				}
			default:
				if tc.changed != nil {
					t.Fatal("no configuration change raised")
				}
			}
			// the server keeps exactly the descriptor of a new attach
			want := before
			if tc.changed != nil {
				want++
			}
			// (the server closes its end of the connection after ours)
			after := openFDs(t)
			for i := 0; i < 100 && after != want; i++ {
				time.Sleep(10 * time.Millisecond)
				after = openFDs(t)
			}
			if after != want {
				t.Fatalf("%d descriptors open after the request, want %d", after, want)
			}
		})
	}
	if id, ro, ok := slot1.Backing(); !ok || !ro || id != "disk-a" || slot1.Capacity() != 64 {
		t.Errorf("slot 1: %q ro=%v attached=%v capacity %d", id, ro, ok, slot1.Capacity())
	}
	if id, ro, ok := slot2.Backing(); !ok || ro || id != "disk-c" {
		t.Errorf("slot 2: %q ro=%v attached=%v", id, ro, ok)
	}
}

// TestVMControlSilentPeer: a peer that connects and sends nothing holds
// the socket only until controlTimeout, then is closed without an answer.
func TestVMControlSilentPeer(t *testing.T) {
	old := controlTimeout
	controlTimeout = 200 * time.Millisecond
	defer func() { controlTimeout = old }()
	slot := virtio.NewBlkSlot()
	defer slot.Close()
	sock := filepath.Join(t.TempDir(), "control.sock")
	ctl, err := listenControl(sock, []virtio.Device{slot}, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	defer ctl.Close()
	go ctl.serve(func(virtio.Device) error { return nil })
	silent, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	silent.SetDeadline(time.Now().Add(5 * time.Second))
	t0 := time.Now()
	if b, _ := io.ReadAll(silent); len(b) != 0 || time.Since(t0) > 3*time.Second {
		t.Fatalf("a silent peer got %q after %v, want the connection closed after the timeout", b, time.Since(t0))
	}
	// the next one is served
	f, err := os.CreateTemp(t.TempDir(), "disk")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.Truncate(4096)
	msg, _ := kvmdrv.ControlRequest{Slot: 0, ID: "x"}.Marshal()
	if got := sendRaw(t, sock, msg, int(f.Fd())); got != "OK 0\n" {
		t.Fatalf("answer %q after a silent peer", got)
	}
}
