// This file owns the socket device's wire format: its constants and the
// packet header (virtio v1.2 §5.10.6), parsed from untrusted guest bytes.

package virtio

import (
	"encoding/binary"
	"errors"
)

// Socket device constants, virtio v1.2 §5.10.
const (
	DeviceIDVsock = 19
	// VsockHostCID is the well-known CID of the host (VMADDR_CID_HOST).
	VsockHostCID = 2

	vsockRxQ = 0
	vsockTxQ = 1
	vsockEvQ = 2

	// VsockHeaderSize is sizeof(struct virtio_vsock_hdr) (§5.10.6).
	VsockHeaderSize = 44

	VsockTypeStream = 1 // VIRTIO_VSOCK_TYPE_STREAM

	// VsockFStream is VIRTIO_VSOCK_F_STREAM (§5.10.3). Drivers predating
	// v1.2 (Linux 6.1) do not know it; "no feature bit" means stream only.
	VsockFStream = 1 << 0

	// Operations, §5.10.6.
	VsockOpInvalid       = 0
	VsockOpRequest       = 1
	VsockOpResponse      = 2
	VsockOpRst           = 3
	VsockOpShutdown      = 4
	VsockOpRW            = 5
	VsockOpCreditUpdate  = 6
	VsockOpCreditRequest = 7

	// SHUTDOWN flags, §5.10.6 "Stream Sockets".
	VsockShutdownRcv  = 1 // VIRTIO_VSOCK_SHUTDOWN_F_RECEIVE
	VsockShutdownSend = 2 // VIRTIO_VSOCK_SHUTDOWN_F_SEND

	// VsockEventTransportReset is VIRTIO_VSOCK_EVENT_TRANSPORT_RESET (§5.10.6, "Device Events").
	VsockEventTransportReset = 0

	// VsockMaxPayload bounds one packet's payload (Linux's
	// VIRTIO_VSOCK_MAX_PKT_BUF_SIZE); longer guest packets are dropped.
	VsockMaxPayload = 64 << 10
	// vsockBufAlloc is the receive buffer we advertise per connection for
	// guest→host data (buf_alloc, §5.10.6 "Buffer Space Management").
	vsockBufAlloc = 256 << 10
	// vsockFirstHostPort is where host-side ports of host-initiated
	// connections start (as in Firecracker).
	vsockFirstHostPort = 1 << 30
	vsockQueueSize     = 256
	// vsockMaxConns bounds live connections; vsockMaxCtrl bounds queued
	// replies to packets of unknown connections.
	vsockMaxConns = 1024
	vsockMaxCtrl  = 4096
)

// VsockHeader is struct virtio_vsock_hdr (§5.10.6), little-endian on the wire.
type VsockHeader struct {
	SrcCID   uint64
	DstCID   uint64
	SrcPort  uint32
	DstPort  uint32
	Len      uint32
	Type     uint16
	Op       uint16
	Flags    uint32
	BufAlloc uint32
	FwdCnt   uint32
}

// ErrShortHeader is returned for packets shorter than VsockHeaderSize.
var ErrShortHeader = errors.New("virtio-vsock: packet shorter than its header")

// ParseVsockHeader decodes the header at the start of b.
func ParseVsockHeader(b []byte) (VsockHeader, error) {
	if len(b) < VsockHeaderSize {
		return VsockHeader{}, ErrShortHeader
	}
	le := binary.LittleEndian
	return VsockHeader{
		SrcCID:   le.Uint64(b[0:]),
		DstCID:   le.Uint64(b[8:]),
		SrcPort:  le.Uint32(b[16:]),
		DstPort:  le.Uint32(b[20:]),
		Len:      le.Uint32(b[24:]),
		Type:     le.Uint16(b[28:]),
		Op:       le.Uint16(b[30:]),
		Flags:    le.Uint32(b[32:]),
		BufAlloc: le.Uint32(b[36:]),
		FwdCnt:   le.Uint32(b[40:]),
	}, nil
}

// Marshal encodes h into b[:VsockHeaderSize].
func (h *VsockHeader) Marshal(b []byte) {
	le := binary.LittleEndian
	_ = b[VsockHeaderSize-1]
	le.PutUint64(b[0:], h.SrcCID)
	le.PutUint64(b[8:], h.DstCID)
	le.PutUint32(b[16:], h.SrcPort)
	le.PutUint32(b[20:], h.DstPort)
	le.PutUint32(b[24:], h.Len)
	le.PutUint16(b[28:], h.Type)
	le.PutUint16(b[30:], h.Op)
	le.PutUint32(b[32:], h.Flags)
	le.PutUint32(b[36:], h.BufAlloc)
	le.PutUint32(b[40:], h.FwdCnt)
}
