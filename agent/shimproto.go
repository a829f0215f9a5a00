package agent

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/hyperhq/hyperd-go/agent/protocol"
	"golang.org/x/sys/unix"
)

// Messages between the agent and a container shim ("hyper-agent init"),
// one JSON object per SOCK_SEQPACKET message, file descriptors attached
// with SCM_RIGHTS.
type shimMsg struct {
	Op     string            `json:"op"` // config ready exec started exit signal error
	ID     string            `json:"id,omitempty"`
	Config *shimConfig       `json:"config,omitempty"`
	Proc   *protocol.Process `json:"proc,omitempty"`
	Sig    int               `json:"sig,omitempty"`
	Pid    int               `json:"pid,omitempty"`
	Code   int               `json:"code,omitempty"`
	Signal int               `json:"signal,omitempty"`
	Err    string            `json:"err,omitempty"`
	// fds received with the message (the agent keeps those of "started":
	// the pty master of a tty process)
	fds []int
}

type shimConfig struct {
	Hostname   string            `json:"hostname"`
	Files      []protocol.File   `json:"files,omitempty"`
	ReadOnlyFS bool              `json:"readonly_fs,omitempty"`
	Sysctl     map[string]string `json:"sysctl,omitempty"`
	ResolvConf []byte            `json:"resolv_conf,omitempty"`
}

const shimMsgMax = 1 << 20

func sendShim(fd int, m shimMsg, fds ...int) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	if len(b) > shimMsgMax {
		return errors.New("shim message too large")
	}
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	return unix.Sendmsg(fd, b, oob, nil, 0)
}

func recvShim(fd int) (shimMsg, []int, error) {
	buf := make([]byte, shimMsgMax)
	oob := make([]byte, unix.CmsgSpace(4*8))
	for {
		n, oobn, flags, _, err := unix.Recvmsg(fd, buf, oob, unix.MSG_CMSG_CLOEXEC)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return shimMsg{}, nil, err
		}
		if n == 0 && oobn == 0 {
			return shimMsg{}, nil, errors.New("shim connection closed")
		}
		var fds []int
		if oobn > 0 {
			scms, err := unix.ParseSocketControlMessage(oob[:oobn])
			if err == nil {
				for _, s := range scms {
					if f, err := unix.ParseUnixRights(&s); err == nil {
						fds = append(fds, f...)
					}
				}
			}
		}
		if flags&(unix.MSG_TRUNC|unix.MSG_CTRUNC) != 0 {
			for _, f := range fds {
				unix.Close(f)
			}
			return shimMsg{}, nil, errors.New("truncated shim message")
		}
		var m shimMsg
		if err := json.Unmarshal(buf[:n], &m); err != nil {
			for _, f := range fds {
				unix.Close(f)
			}
			return shimMsg{}, nil, fmt.Errorf("bad shim message: %w", err)
		}
		return m, fds, nil
	}
}
