// Package consolelog owns a VM's console log on the host: a writer that
// the VMM process (`hyperd vm run --console-log`) feeds the guest's console
// bytes, written to the file in blocks and capped so that a guest printing
// without end cannot fill the host's disk, and the readers of its end.
//
// The log is two files: PATH, the current one, and PATH.1, the one before.
// Each holds at most half the cap; when the current one would pass it, it
// becomes PATH.1 (replacing the older one) and PATH starts empty. So the
// log never takes more than the cap and always keeps at least its newest
// half. Readers (Tail) read PATH.1 then PATH.
package consolelog
