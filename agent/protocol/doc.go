// Package protocol holds the wire types and the frame codec of the
// daemon↔agent protocol described in agent/PROTOCOL.md: 4-byte big-endian
// length-prefixed JSON frames, capped at MaxFrame.
package protocol
