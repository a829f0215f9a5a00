// This file owns the network device's wire format (virtio v1.2 §5.1):
// its constants and feature bits, struct virtio_net_hdr, the checks of
// the headers the guest sends, the fix-ups of those it receives, and
// completing a partial checksum in software.

package virtio

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Network device constants, virtio v1.2 §5.1.
const (
	DeviceIDNet = 1 // §5.1.1 Device ID

	// Feature bits, §5.1.3 "Feature bits". Offered: CSUM, GUEST_CSUM,
	// MTU, MAC, GUEST_TSO4/6, HOST_TSO4/6, MRG_RXBUF, STATUS (the
	// offloads only when the backend handles them, see NetBackend).
	NetFCsum      = 1 << 0  // VIRTIO_NET_F_CSUM: device takes packets with a partial checksum
	NetFGuestCsum = 1 << 1  // VIRTIO_NET_F_GUEST_CSUM: driver takes packets with a partial checksum
	NetFMTU       = 1 << 3  // VIRTIO_NET_F_MTU: mtu in the configuration space is valid
	NetFMAC       = 1 << 5  // VIRTIO_NET_F_MAC: mac in the configuration space is valid
	NetFGuestTSO4 = 1 << 7  // VIRTIO_NET_F_GUEST_TSO4: driver takes TSOv4 packets
	NetFGuestTSO6 = 1 << 8  // VIRTIO_NET_F_GUEST_TSO6: driver takes TSOv6 packets
	NetFGuestECN  = 1 << 9  // VIRTIO_NET_F_GUEST_ECN (not offered)
	NetFGuestUFO  = 1 << 10 // VIRTIO_NET_F_GUEST_UFO (not offered)
	NetFHostTSO4  = 1 << 11 // VIRTIO_NET_F_HOST_TSO4: device takes TSOv4 packets
	NetFHostTSO6  = 1 << 12 // VIRTIO_NET_F_HOST_TSO6: device takes TSOv6 packets
	NetFHostECN   = 1 << 13 // VIRTIO_NET_F_HOST_ECN (not offered)
	NetFHostUFO   = 1 << 14 // VIRTIO_NET_F_HOST_UFO (not offered)
	NetFMrgRxbuf  = 1 << 15 // VIRTIO_NET_F_MRG_RXBUF: a frame may span several rx chains
	NetFStatus    = 1 << 16 // VIRTIO_NET_F_STATUS: status in the configuration space is valid

	// NetSLinkUp is VIRTIO_NET_S_LINK_UP in the status field (§5.1.4).
	NetSLinkUp = 1

	// struct virtio_net_hdr, §5.1.6 "Device Operation". With
	// VIRTIO_F_VERSION_1 it always has num_buffers, 12 bytes:
	//	u8 flags; u8 gso_type; le16 hdr_len; le16 gso_size;
	//	le16 csum_start; le16 csum_offset; le16 num_buffers;
	NetHdrSize = 12

	NetHdrFNeedsCsum = 1 // VIRTIO_NET_HDR_F_NEEDS_CSUM
	NetHdrFDataValid = 2 // VIRTIO_NET_HDR_F_DATA_VALID (receive only)
	NetHdrFRscInfo   = 4 // VIRTIO_NET_HDR_F_RSC_INFO (never set: no GUEST_RSC)

	NetHdrGSONone  = 0    // VIRTIO_NET_HDR_GSO_NONE
	NetHdrGSOTCPv4 = 1    // VIRTIO_NET_HDR_GSO_TCPV4
	NetHdrGSOUDP   = 3    // VIRTIO_NET_HDR_GSO_UDP (UFO, not offered)
	NetHdrGSOTCPv6 = 4    // VIRTIO_NET_HDR_GSO_TCPV6
	NetHdrGSOUDPL4 = 5    // VIRTIO_NET_HDR_GSO_UDP_L4 (USO, not offered)
	NetHdrGSOECN   = 0x80 // VIRTIO_NET_HDR_GSO_ECN (needs HOST_ECN/GUEST_ECN, not offered)

	// NetMaxFrame bounds one frame, Ethernet header included and the
	// virtio header not: a 64 KiB TSO packet plus link headers (the
	// limit QEMU and Firecracker use). Longer frames are dropped.
	NetMaxFrame = 65550

	// NetDefaultMTU is the MTU offered when NetConfig.MTU is 0.
	NetDefaultMTU = 1500
	// NetMinMTU is the smallest MTU offered (IPv4's minimum, 68; the
	// driver ignores a smaller one, §5.1.4.2).
	NetMinMTU = 68

	netRxQ       = 0 // receiveq1 (§5.1.2 Virtqueues)
	netTxQ       = 1 // transmitq1
	netQueueSize = 256
	ethHdrLen    = 14 // destination, source, EtherType

	// struct virtio_net_config, §5.1.4 "Device configuration layout":
	//	u8 mac[6]; le16 status; le16 max_virtqueue_pairs; le16 mtu; ...
	// We expose it up to mtu; the rest (speed, duplex, RSS) is not offered.
	netCfgMAC        = 0
	netCfgStatus     = 6
	netCfgMaxVQPairs = 8
	netCfgMTU        = 10
	netConfigSize    = 12

	// Offload groups: what the guest sends (host side handles it) and
	// what the guest receives (the backend must be told, TUNSETOFFLOAD).
	netHostOffloads  = NetFCsum | NetFHostTSO4 | NetFHostTSO6
	netGuestOffloads = NetFGuestCsum | NetFGuestTSO4 | NetFGuestTSO6
)

// NetHdr is struct virtio_net_hdr (§5.1.6), little-endian on the wire.
type NetHdr struct {
	Flags      uint8
	GSOType    uint8
	HdrLen     uint16
	GSOSize    uint16
	CsumStart  uint16
	CsumOffset uint16
	NumBuffers uint16
}

// ErrShortNetHdr is returned for buffers shorter than NetHdrSize.
var ErrShortNetHdr = errors.New("virtio-net: shorter than virtio_net_hdr")

// ParseNetHdr decodes the header at the start of b.
func ParseNetHdr(b []byte) (NetHdr, error) {
	if len(b) < NetHdrSize {
		return NetHdr{}, ErrShortNetHdr
	}
	le := binary.LittleEndian
	return NetHdr{Flags: b[0], GSOType: b[1], HdrLen: le.Uint16(b[2:]), GSOSize: le.Uint16(b[4:]),
		CsumStart: le.Uint16(b[6:]), CsumOffset: le.Uint16(b[8:]), NumBuffers: le.Uint16(b[10:])}, nil
}

// Marshal encodes h into b[:NetHdrSize].
func (h *NetHdr) Marshal(b []byte) {
	le := binary.LittleEndian
	_ = b[NetHdrSize-1]
	b[0], b[1] = h.Flags, h.GSOType
	le.PutUint16(b[2:], h.HdrLen)
	le.PutUint16(b[4:], h.GSOSize)
	le.PutUint16(b[6:], h.CsumStart)
	le.PutUint16(b[8:], h.CsumOffset)
	le.PutUint16(b[10:], h.NumBuffers)
}

// checkTxHdr validates (and tidies) a guest header against the negotiated
// features f for a frame of n bytes, §5.1.6.2.1 "Driver Requirements:
// Packet Transmission". The host kernel validates further what a tap gets.
func checkTxHdr(h *NetHdr, f uint64, n int) error {
	h.Flags &= NetHdrFNeedsCsum // DATA_VALID and RSC_INFO mean nothing on transmit
	if h.Flags != 0 {
		if f&NetFCsum == 0 {
			return errors.New("NEEDS_CSUM without VIRTIO_NET_F_CSUM")
		}
		if int(h.CsumStart)+int(h.CsumOffset)+2 > n {
			return fmt.Errorf("checksum at %d+%d outside a %d-byte frame", h.CsumStart, h.CsumOffset, n)
		}
	}
	switch h.GSOType {
	case NetHdrGSONone:
		return nil
	case NetHdrGSOTCPv4:
		if f&NetFHostTSO4 == 0 {
			return errors.New("TSOv4 frame without VIRTIO_NET_F_HOST_TSO4")
		}
	case NetHdrGSOTCPv6:
		if f&NetFHostTSO6 == 0 {
			return errors.New("TSOv6 frame without VIRTIO_NET_F_HOST_TSO6")
		}
	default:
		return fmt.Errorf("gso_type %#x not negotiated", h.GSOType)
	}
	if h.Flags&NetHdrFNeedsCsum == 0 || h.GSOSize == 0 {
		return errors.New("TSO frame without NEEDS_CSUM or gso_size")
	}
	return nil
}

// fixRxHdr makes a frame's header fit the negotiated features (§5.1.6.4.1
// "Device Requirements: Processing of Incoming Packets"): without
// GUEST_CSUM flags are 0 and the packet fully checksummed; TSO only when
// GUEST_TSO4/6 allow it. The backend normally delivers exactly that
// (SetGuestOffloads); this covers a backend that could not be told. It
// reports false when the frame must be dropped. f are the
// negotiated features.
func fixRxHdr(pkt []byte, f uint64) bool {
	h, _ := ParseNetHdr(pkt)
	switch h.GSOType {
	case NetHdrGSONone:
	case NetHdrGSOTCPv4:
		if f&NetFGuestTSO4 == 0 {
			return false
		}
	case NetHdrGSOTCPv6:
		if f&NetFGuestTSO6 == 0 {
			return false
		}
	default:
		return false
	}
	if f&NetFGuestCsum == 0 {
		if h.Flags&NetHdrFNeedsCsum != 0 && !completeChecksum(pkt[NetHdrSize:], h.CsumStart, h.CsumOffset) {
			return false
		}
		h.Flags, h.CsumStart, h.CsumOffset = 0, 0, 0
	}
	h.Flags &= NetHdrFNeedsCsum | NetHdrFDataValid
	h.Marshal(pkt)
	return true
}

// completeChecksum finishes a partial checksum (NEEDS_CSUM, §5.1.6.2): the
// 16-bit ones' complement of the sum from start to the end of the frame,
// whose checksum field already holds the pseudo-header sum, stored at
// start+offset. It reports false if the field lies outside the frame.
func completeChecksum(frame []byte, start, offset uint16) bool {
	s, at := int(start), int(start)+int(offset)
	if at+2 > len(frame) {
		return false
	}
	var sum uint32 // at most 32775 words of 0xffff: no overflow
	b := frame[s:]
	for ; len(b) >= 2; b = b[2:] {
		sum += uint32(b[0])<<8 | uint32(b[1])
	}
	if len(b) == 1 {
		sum += uint32(b[0]) << 8
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(frame[at:], ^uint16(sum))
	return true
}
