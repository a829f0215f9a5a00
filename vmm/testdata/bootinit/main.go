// Command bootinit is the /init of the initramfs TestBootLinux boots: it
// prints milestones to the serial console, brings the CPUs the kernel
// left offline online (hyperd.boot.online=1) and says how many are, loads the virtio and vsock
// modules listed in /modules/order, does a vsock round trip with the host in
// both directions (guest-initiated to host port 5000, host-initiated to
// guest port 1024), and powers the machine off. Its console lines
// ("HYPERD-BOOT: ...") go through internal/guestinit.
package main

import (
	"bufio"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/mdlayher/vsock"
	"golang.org/x/sys/unix"

	"github.com/hyperhq/hyperd-go/internal/guestinit"
)

func main() {
	console := guestinit.Start("HYPERD-BOOT")
	console.Say("init started")
	n, err := onlineCPUs()
	if err != nil {
		console.Fail("CPUs: %v", err)
	}
	console.Say("%d CPUs online", n)

	if err := guestinit.LoadModules("/modules", nil); err != nil {
		console.Fail("%v", err)
	}
	console.Say("modules loaded")

	// Host-initiated: the test connects with "CONNECT 1024".
	ln, err := vsock.Listen(1024, nil)
	if err != nil {
		console.Fail("vsock listen: %v", err)
	}
	console.Say("vsock listening")

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
		console.Fail("vsock dial host:5000: %v", err)
	}
	fmt.Fprintf(c, "ping from guest\n")
	reply, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		console.Fail("vsock read: %v", err)
	}
	c.Close()
	console.Say("vsock guest->host ok %q", strings.TrimSpace(reply))

	hc, err := ln.Accept()
	if err != nil {
		console.Fail("vsock accept: %v", err)
	}
	line, err := bufio.NewReader(hc).ReadString('\n')
	if err != nil {
		console.Fail("vsock read from host: %v", err)
	}
	fmt.Fprintf(hc, "echo %s", line)
	hc.Close()
	console.Say("vsock host->guest ok %q", strings.TrimSpace(line))

	console.Say("powering off")
	console.PowerOff()
}

// onlineCPUs brings up every offline CPU when the command line asks
// (hyperd.boot.online=1: the kernel booted with maxcpus=1) and returns how
// many CPUs are online.
func onlineCPUs() (int, error) {
	os.MkdirAll("/sys", 0o755)
	if err := unix.Mount("sysfs", "/sys", "sysfs", 0, ""); err != nil && err != unix.EBUSY {
		return 0, fmt.Errorf("mount /sys: %w", err)
	}
	cmdline, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		return 0, err
	}
	if slices.Contains(strings.Fields(string(cmdline)), "hyperd.boot.online=1") {
		if _, err := guestinit.OnlineCPUs("/sys"); err != nil {
			return 0, err
		}
	}
	b, err := os.ReadFile("/sys/devices/system/cpu/online")
	if err != nil {
		return 0, err
	}
	return countCPUs(strings.TrimSpace(string(b)))
}

// countCPUs counts a kernel CPU list ("0", "0-1", "0,2-3").
func countCPUs(list string) (int, error) {
	n := 0
	for _, r := range strings.Split(list, ",") {
		lo, hi, isRange := strings.Cut(r, "-")
		a, err := strconv.Atoi(lo)
		if err != nil {
			return 0, fmt.Errorf("CPU list %q: %w", list, err)
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(hi); err != nil || b < a {
				return 0, fmt.Errorf("CPU list %q: bad range %q", list, r)
			}
		}
		n += b - a + 1
	}
	return n, nil
}
