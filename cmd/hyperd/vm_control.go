// This file owns the control socket of `hyperd vm run` (--control): the
// daemon hands the running VM a disk image as an open file descriptor
// with a one-line request (the format is sandbox/kvmdrv's control.go),
// and the VM process attaches it to an empty virtio-blk slot and tells
// the guest (a configuration change interrupt). The VM process is jailed
// and cannot open the image by path; the socket is made before the jail
// is entered, mode 0600, and only a peer of the uid that started the VM
// process (the daemon's) is served. Every request is bounded and checked:
// one line of at most kvmdrv.MaxControlRequest bytes, exactly one
// descriptor (any others are closed), one request per connection, one
// connection at a time, each within controlTimeout (a peer silent that
// long is closed without an answer).

package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hyperhq/hyperd-go/sandbox/kvmdrv"
	"github.com/hyperhq/hyperd-go/virtio"
)

// controlTimeout bounds one control connection, request to answer.
var controlTimeout = 5 * time.Second

// controlMaxFDs is how many descriptors a request's control message may
// carry before it is truncated: one is valid, the rest are received only
// to be closed.
const controlMaxFDs = 4

// diskControl serves a VM process's control socket.
type diskControl struct {
	ln   *net.UnixListener
	uid  int           // the only peer uid served
	blks []*virtio.Blk // the VM's block devices in bus order (a request's slot indexes them)
	logf func(string, ...any)

	mu      sync.Mutex
	changed func(virtio.Device) error // the machine's ConfigChanged; nil until serve
}

// listenControl makes the control socket at path (mode 0600) for the VM
// whose devices are devs.
func listenControl(path string, devs []virtio.Device, logf func(string, ...any)) (*diskControl, error) {
	c := &diskControl{uid: os.Getuid(), logf: logf}
	for _, d := range devs {
		if b, ok := d.(*virtio.Blk); ok {
			c.blks = append(c.blks, b)
		}
	}
	os.Remove(path) // a previous VM process's, in a reused directory
	// no moment where another user could connect: the umask makes the
	// socket 0600 from its bind on
	old := syscall.Umask(0o177)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	syscall.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("--control: %w", err)
	}
	c.ln = ln
	return c, nil
}

// serve answers requests until the listener is closed; changed raises a
// device's configuration change interrupt (vmm.Machine.ConfigChanged).
func (c *diskControl) serve(changed func(virtio.Device) error) {
	c.mu.Lock()
	c.changed = changed
	c.mu.Unlock()
	for {
		conn, err := c.ln.AcceptUnix()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			c.logf("control socket: %v", err)
			time.Sleep(100 * time.Millisecond) // EMFILE and the like: not a busy loop
			continue
		}
		c.handle(conn)
	}
}

func (c *diskControl) Close() error { return c.ln.Close() }

// handle serves one connection: one request, one answer.
func (c *diskControl) handle(conn *net.UnixConn) {
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(controlTimeout))
	if err := c.checkPeer(conn); err != nil {
		c.logf("control socket: %v", err)
		return // not ours to answer
	}
	req, f, err := readControlRequest(conn)
	slot := req.Slot
	if err == nil {
		err = c.attach(req, f)
	}
	if err != nil {
		c.logf("control socket: %v", err)
	} else {
		c.logf("disk %s attached to slot %d (%s)", req.ID, slot, map[bool]string{true: "read-only", false: "read-write"}[req.ReadOnly])
	}
	if _, err := conn.Write(kvmdrv.ControlAnswer(slot, err)); err != nil {
		return // a silent peer past the deadline: closed without an answer
	}
	// what a peer sent beyond the request is read away (bounded, until it
	// closes or the deadline): closing a unix socket with unread data
	// resets the connection, and the peer would lose the answer
	conn.CloseWrite()
	io.Copy(io.Discard, io.LimitReader(conn, 4096))
}

// checkPeer serves only the uid that started the VM process.
func (c *diskControl) checkPeer(conn *net.UnixConn) error {
	raw, err := conn.SyscallConn()
	if err != nil {
		return err
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return err
	}
	if cerr != nil {
		return fmt.Errorf("peer credentials: %w", cerr)
	}
	if int(cred.Uid) != c.uid {
		return fmt.Errorf("a peer of uid %d refused (only uid %d is served)", cred.Uid, c.uid)
	}
	return nil
}

// readControlRequest reads one request message and its one descriptor.
// On an error every received descriptor is closed.
func readControlRequest(conn *net.UnixConn) (kvmdrv.ControlRequest, *os.File, error) {
	buf := make([]byte, kvmdrv.MaxControlRequest+1)
	oob := make([]byte, unix.CmsgSpace(controlMaxFDs*4))
	n, oobn, flags, _, err := conn.ReadMsgUnix(buf, oob)
	if err != nil {
		return kvmdrv.ControlRequest{}, nil, fmt.Errorf("reading a request: %w", err)
	}
	fds, ferr := receivedFDs(oob[:oobn])
	closeAll := func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}
	switch {
	case ferr != nil:
		closeAll()
		return kvmdrv.ControlRequest{}, nil, ferr
	case flags&unix.MSG_CTRUNC != 0:
		closeAll()
		return kvmdrv.ControlRequest{}, nil, fmt.Errorf("a request with more than %d descriptors", controlMaxFDs)
	case len(fds) != 1:
		closeAll()
		return kvmdrv.ControlRequest{}, nil, fmt.Errorf("a request carries %d descriptors, want 1", len(fds))
	}
	req, err := kvmdrv.ParseControlRequest(buf[:n])
	if err != nil {
		closeAll()
		return req, nil, err
	}
	return req, os.NewFile(uintptr(fds[0]), "disk-"+req.ID), nil
}

// receivedFDs collects the descriptors of the SCM_RIGHTS messages in oob;
// other control messages are an error (after the descriptors are taken,
// so the caller closes them).
func receivedFDs(oob []byte) ([]int, error) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, fmt.Errorf("control message: %w", err)
	}
	var fds []int
	var bad error
	for _, m := range msgs {
		if m.Header.Level != unix.SOL_SOCKET || m.Header.Type != unix.SCM_RIGHTS {
			bad = fmt.Errorf("unexpected control message (level %d, type %d)", m.Header.Level, m.Header.Type)
			continue
		}
		r, err := unix.ParseUnixRights(&m)
		if err != nil {
			bad = fmt.Errorf("control message: %w", err)
			continue
		}
		fds = append(fds, r...)
	}
	return fds, bad
}

// attach backs block device req.Slot with f. It takes f: the slot keeps
// it, or it is closed.
func (c *diskControl) attach(req kvmdrv.ControlRequest, f *os.File) error {
	if req.Slot >= len(c.blks) {
		f.Close()
		return fmt.Errorf("slot %d: the VM has %d block devices", req.Slot, len(c.blks))
	}
	b := c.blks[req.Slot]
	if !b.Slot() {
		f.Close()
		return fmt.Errorf("block device %d is a boot-time disk, not a slot", req.Slot)
	}
	if id, ro, ok := b.Backing(); ok {
		f.Close() // a repeated request: the slot keeps its file
		if id == req.ID && ro == req.ReadOnly {
			return nil
		}
		return fmt.Errorf("slot %d already holds disk %s", req.Slot, id)
	}
	if err := b.AttachFile(f, req.ReadOnly, req.ID); err != nil {
		f.Close()
		return err
	}
	c.mu.Lock()
	changed := c.changed
	c.mu.Unlock()
	if changed == nil {
		return nil // not running yet: the guest reads the capacity when its driver probes
	}
	return changed(b)
}
