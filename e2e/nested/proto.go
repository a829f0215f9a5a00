// This file owns the wire protocol between the runner (host) and l1init
// (PID 1 in the L1 guest): one TCP connection per command, a JSON request
// line, then frames from the guest until the command's exit frame.
package nested

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// GuestPort is the TCP port l1init serves commands on inside L1; the runner
// reaches it through a QEMU user-network hostfwd from host loopback.
const GuestPort = 7000

// Request is the first line a runner connection sends.
type Request struct {
	// Argv is the command; Argv[0] is looked up in PATH.
	Argv []string `json:"argv,omitempty"`
	// Env is added to l1init's base environment (PATH, HOME, TMPDIR).
	Env []string `json:"env,omitempty"`
	// Dir is the working directory ("" = /).
	Dir string `json:"dir,omitempty"`
	// Ping asks for a Pong frame instead of running a command: the
	// liveness probe that goes through neither hyperd nor a child process.
	Ping bool `json:"ping,omitempty"`
	// Poweroff syncs and powers L1 off (answered with an Exit frame first).
	Poweroff bool `json:"poweroff,omitempty"`
}

// Frame types, guest → host.
const (
	FrameStdout byte = 1
	FrameStderr byte = 2
	// FrameExit ends a command: its payload is an Exit in JSON.
	FrameExit byte = 3
	// FramePong answers a Ping: its payload is the guest's /proc/uptime.
	FramePong byte = 4
)

// MaxFrame bounds one frame's payload: a longer length is a protocol
// error, not an allocation.
const MaxFrame = 1 << 20

// Exit is how a command ended. Code is the exit status (128+signal when
// killed by a signal, as a shell reports it); Error says why a command could
// not be started or waited for (then Code is -1).
type Exit struct {
	Code  int    `json:"code"`
	Error string `json:"error,omitempty"`
	// CodePatches is the kernel text patches (static key switches, each
	// with the stack that switched it) L1 made while the command ran, from
	// l1init's trace (l1init/patches.go); with both vCPUs online each one
	// risks freezing L1 under TCG (l1init/keys.go).
	CodePatches string `json:"code_patches,omitempty"`
}

// WriteFrame writes one frame: type, big-endian uint32 length, payload.
func WriteFrame(w io.Writer, typ byte, p []byte) error {
	if len(p) > MaxFrame {
		return fmt.Errorf("nested: frame of %d bytes exceeds %d", len(p), MaxFrame)
	}
	var h [5]byte
	h[0] = typ
	binary.BigEndian.PutUint32(h[1:], uint32(len(p)))
	if _, err := w.Write(h[:]); err != nil {
		return err
	}
	_, err := w.Write(p)
	return err
}

// ReadFrame reads one frame, refusing unknown types and oversized lengths.
func ReadFrame(r io.Reader) (byte, []byte, error) {
	var h [5]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, nil, err
	}
	typ, n := h[0], binary.BigEndian.Uint32(h[1:])
	if typ < FrameStdout || typ > FramePong {
		return 0, nil, fmt.Errorf("nested: unknown frame type %d", typ)
	}
	if n > MaxFrame {
		return 0, nil, fmt.Errorf("nested: frame length %d exceeds %d", n, MaxFrame)
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(r, p); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, err
	}
	return typ, p, nil
}

// WriteExit writes the exit frame.
func WriteExit(w io.Writer, e Exit) error {
	b, _ := json.Marshal(e)
	return WriteFrame(w, FrameExit, b)
}
