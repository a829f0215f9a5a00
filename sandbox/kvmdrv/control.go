// This file owns the wire format of a VM process's control socket, over
// which the daemon hands a running VM a disk (disk hotplug): the request
// line with its file descriptor, the answer, and the parsing of both. Both
// sides treat what they read as hostile: the VM process (hyperd vm run,
// cmd/hyperd/vm_control.go) is jailed because a guest may take it over,
// so the daemon bounds and checks its answers; and the VM process checks
// every request as if anyone could send it.
//
// One request per connection, in one message (sendmsg):
//
//	ATTACH <slot> <ro|rw> <id>\n   with exactly one fd (SCM_RIGHTS): the
//	                               open disk image
//
// <slot> is the index of a block device among the VM's virtio-blk devices
// in bus order (the guest's /dev/vd<'a'+slot>), which must be an empty
// slot (hyperd vm run --disk-slots, or a template's); <id> (1 to 20 bytes
// of [A-Za-z0-9._-]) is its VIRTIO_BLK_T_GET_ID serial. Attaching the same
// id (and mode) to a slot that already holds it answers OK again, so a
// daemon that died before it recorded an attach can repeat it. The answer
// is one line, then the VM process closes the connection:
//
//	OK <slot>\n | ERR <reason>\n

package kvmdrv

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
)

// controlSock is the VM process's control socket, beside its vsock socket
// (in its jail directory when jailed).
const controlSock = "control.sock"

// Control protocol bounds.
const (
	// MaxControlRequest bounds a request line, its newline included.
	MaxControlRequest = 64
	// MaxControlAnswer bounds an answer line, its newline included.
	MaxControlAnswer = 512
	// MaxDiskSlot bounds a slot index: a VM has at most 19 devices (the
	// I/O APIC's pins after the legacy ones).
	MaxDiskSlot = 31
	// maxDiskID is VIRTIO_BLK_ID_BYTES.
	maxDiskID = 20
)

// ControlRequest is one ATTACH request.
type ControlRequest struct {
	Slot     int
	ReadOnly bool
	ID       string
}

// Marshal writes the request line.
func (r ControlRequest) Marshal() ([]byte, error) {
	if err := checkRequest(r); err != nil {
		return nil, err
	}
	mode := "rw"
	if r.ReadOnly {
		mode = "ro"
	}
	return fmt.Appendf(nil, "ATTACH %d %s %s\n", r.Slot, mode, r.ID), nil
}

func checkRequest(r ControlRequest) error {
	if r.Slot < 0 || r.Slot > MaxDiskSlot {
		return fmt.Errorf("control: slot %d out of range 0..%d", r.Slot, MaxDiskSlot)
	}
	if !validDiskID(r.ID) {
		return fmt.Errorf("control: disk id %q: want 1 to %d bytes of [A-Za-z0-9._-]", r.ID, maxDiskID)
	}
	return nil
}

func validDiskID(id string) bool {
	if id == "" || len(id) > maxDiskID {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// ParseControlRequest parses one request message: exactly one line,
// newline-terminated, at most MaxControlRequest bytes, in the canonical
// form Marshal writes (one space between fields, no leading zeros, no sign).
func ParseControlRequest(b []byte) (ControlRequest, error) {
	var r ControlRequest
	if len(b) > MaxControlRequest {
		return r, fmt.Errorf("control: request of %d bytes, at most %d", len(b), MaxControlRequest)
	}
	line, ok := bytes.CutSuffix(b, []byte("\n"))
	if !ok || bytes.IndexByte(line, '\n') >= 0 {
		return r, errors.New("control: a request is one newline-terminated line")
	}
	f := bytes.Split(line, []byte(" "))
	if len(f) != 4 || string(f[0]) != "ATTACH" {
		return r, errors.New("control: want ATTACH <slot> <ro|rw> <id>")
	}
	n, err := strconv.Atoi(string(f[1]))
	if err != nil || strconv.Itoa(n) != string(f[1]) {
		return r, fmt.Errorf("control: slot %q is not a number", f[1])
	}
	r.Slot = n
	switch string(f[2]) {
	case "ro":
		r.ReadOnly = true
	case "rw":
	default:
		return r, fmt.Errorf("control: mode %q: want ro or rw", f[2])
	}
	r.ID = string(f[3])
	if err := checkRequest(r); err != nil {
		return ControlRequest{}, err
	}
	return r, nil
}

// ControlAnswer writes the answer line to a request: OK with the slot, or
// ERR with the error (its unprintable bytes replaced, cut to fit).
func ControlAnswer(slot int, err error) []byte {
	if err == nil {
		return fmt.Appendf(nil, "OK %d\n", slot)
	}
	return append(append([]byte("ERR "), printable(err.Error(), MaxControlAnswer-len("ERR \n"))...), '\n')
}

// printable keeps at most n bytes of s, printable ASCII only.
func printable(s string, n int) []byte {
	out := make([]byte, 0, min(len(s), n))
	for i := 0; i < len(s) && len(out) < n; i++ {
		c := s[i]
		if c < 0x20 || c > 0x7e {
			c = '?'
		}
		out = append(out, c)
	}
	return out
}

// ParseControlAnswer parses the VM process's answer to a request for slot
// want: nil for OK want, the VM process's reason (sanitized) for ERR, and
// an error for anything else.
func ParseControlAnswer(b []byte, want int) error {
	if len(b) > MaxControlAnswer {
		return fmt.Errorf("control: answer of more than %d bytes", MaxControlAnswer)
	}
	line, ok := bytes.CutSuffix(b, []byte("\n"))
	if !ok || bytes.IndexByte(line, '\n') >= 0 {
		return fmt.Errorf("control: answer %q is not one line", printable(string(b), 80))
	}
	if msg, ok := bytes.CutPrefix(line, []byte("ERR ")); ok {
		return fmt.Errorf("the VM process refused: %s", printable(string(msg), MaxControlAnswer))
	}
	if n, ok := bytes.CutPrefix(line, []byte("OK ")); ok && string(n) == strconv.Itoa(want) {
		return nil
	}
	return fmt.Errorf("control: answer %q to a request for slot %d", printable(string(line), 80), want)
}
