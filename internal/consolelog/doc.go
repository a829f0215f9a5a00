// Package consolelog owns a VM's console log on the host: a writer that
// the VMM process (`hyperd vm run --console-log`) feeds the guest's console
// bytes, written to the file in blocks and capped so that a guest printing
// without end cannot fill the host's disk, and the readers of its end.
//
// The log is two files, PATH (the current one) and PATH.1 (the one
// before), opened once: the VMM is jailed, without a path to them, by the
// time it rotates. Each holds at most half the cap; when PATH would pass
// it, its content is copied over PATH.1 and PATH starts empty. So the log
// never takes more than the cap and always keeps at least its newest half.
// Readers (Tail) read PATH.1 then PATH.
package consolelog
