// Package mux carries many byte-stream connections over one byte stream (a
// serial port or virtio-console char device, where only one connection
// exists), so the agent's connection-per-stream protocol works unchanged
// there. Each stream has its own credit window, so a stream nobody reads
// never blocks the others (or the control connection). See
// agent/PROTOCOL.md, "Serial transport".
package mux
