// guestinit.go owns Console (Start, Say, Fail, PowerOff).
package guestinit

import (
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// Console writes the program's lines, each "PREFIX: text", to the guest's
// serial console.
type Console struct {
	W      io.Writer
	Prefix string // e.g. "HYPERD-NET"
	// off powers the machine off (PowerOff; tests replace it).
	off func()
}

// Start mounts devtmpfs on /dev and proc on /proc (errors ignored: a
// missing one shows in what fails next) and returns a Console on
// /dev/ttyS0, or on stdout if that cannot be opened.
func Start(prefix string) *Console {
	os.MkdirAll("/dev", 0o755)
	unix.Mount("devtmpfs", "/dev", "devtmpfs", 0, "")
	os.MkdirAll("/proc", 0o755)
	unix.Mount("proc", "/proc", "proc", 0, "")
	var w io.Writer = os.Stdout
	if f, err := os.OpenFile("/dev/ttyS0", os.O_WRONLY, 0); err == nil {
		w = f
	}
	return &Console{W: w, Prefix: prefix}
}

// Say writes one line.
func (c *Console) Say(format string, args ...any) {
	fmt.Fprintf(c.W, c.Prefix+": "+format+"\n", args...)
}

// Fail says "FAIL why" and powers the machine off; it does not return.
func (c *Console) Fail(format string, args ...any) {
	c.Say("FAIL "+format, args...)
	c.PowerOff()
}

// PowerOff syncs and powers the machine off; it does not return. A
// refused power-off is said as a FAIL line first.
func (c *Console) PowerOff() {
	if c.off != nil {
		c.off()
		return
	}
	unix.Sync()
	if err := unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF); err != nil {
		c.Say("FAIL poweroff: %v", err)
	}
	select {}
}
