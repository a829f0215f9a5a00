// Command bootinit is the /init of the initramfs TestBootLinux boots: it
// prints milestones to the serial console, loads the virtio and vsock
// modules listed in /modules/order, does a vsock round trip with the host in
// both directions (guest-initiated to host port 5000, host-initiated to
// guest port 1024), and powers the machine off.
package main

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/mdlayher/vsock"
	"golang.org/x/sys/unix"
)

var console *os.File

func say(format string, args ...any) {
	fmt.Fprintf(console, "HYPERD-BOOT: "+format+"\n", args...)
}

func fail(format string, args ...any) {
	say("FAIL "+format, args...)
	unix.Sync()
	unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	select {}
}

func main() {
	os.MkdirAll("/dev", 0o755)
	unix.Mount("devtmpfs", "/dev", "devtmpfs", 0, "")
	os.MkdirAll("/proc", 0o755)
	unix.Mount("proc", "/proc", "proc", 0, "")
	var err error
	if console, err = os.OpenFile("/dev/ttyS0", os.O_WRONLY, 0); err != nil {
		console = os.Stdout
	}
	say("init started")

	order, err := os.ReadFile("/modules/order")
	if err != nil {
		fail("reading /modules/order: %v", err)
	}
	for _, m := range strings.Fields(string(order)) {
		f, err := os.Open(filepath.Join("/modules", m))
		if err != nil {
			fail("module %s: %v", m, err)
		}
		err = unix.FinitModule(int(f.Fd()), "", 0)
		f.Close()
		if err != nil && err != unix.EEXIST {
			fail("loading %s: %v", m, err)
		}
	}
	say("modules loaded")

	// Host-initiated: the test connects with "CONNECT 1024".
	ln, err := vsock.Listen(1024, nil)
	if err != nil {
		fail("vsock listen: %v", err)
	}
	say("vsock listening")

	// Guest-initiated: the host listens on <uds>_5000.
	var c *vsock.Conn
	for i := 0; ; i++ {
		c, err = vsock.Dial(vsock.Host, 5000, nil)
		if err == nil || i == 50 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		fail("vsock dial host:5000: %v", err)
	}
	fmt.Fprintf(c, "ping from guest\n")
	reply, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		fail("vsock read: %v", err)
	}
	c.Close()
	say("vsock guest->host ok %q", strings.TrimSpace(reply))

	hc, err := ln.Accept()
	if err != nil {
		fail("vsock accept: %v", err)
	}
	line, err := bufio.NewReader(hc).ReadString('\n')
	if err != nil {
		fail("vsock read from host: %v", err)
	}
	fmt.Fprintf(hc, "echo %s", line)
	hc.Close()
	say("vsock host->guest ok %q", strings.TrimSpace(line))

	say("powering off")
	unix.Sync()
	if err := unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF); err != nil {
		fail("poweroff: %v", err)
	}
	select {}
}
