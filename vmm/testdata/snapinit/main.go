// Command snapinit is the /init of TestSnapshotRestore's guest (the
// project's kernel, everything built in): it prints "tick N" on the
// serial console every 50 ms, counting from its start, and serves vsock
// port 1024, one line command per connection:
//
//	echo X  answers X
//	disk    answers the first 16 bytes of /dev/vda in hex once the disk
//	        has a size (a template's empty slot gets one at restore)
//	rng     answers 16 bytes of /dev/hwrng (virtio-rng) in hex
//	ticks   answers the current tick count
//
// A snapshot taken while it runs and restored must keep counting from
// where it was and keep serving.
package main

import (
	"bufio"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/mdlayher/vsock"
	"golang.org/x/sys/unix"

	"github.com/hyperhq/hyperd-go/internal/guestinit"
)

var ticks atomic.Int64

var say func(format string, args ...any)

func main() {
	con := guestinit.Start("SNAPINIT")
	say = con.Say
	os.MkdirAll("/sys", 0o755)
	unix.Mount("sysfs", "/sys", "sysfs", 0, "")
	// any CID: a restored guest may get a new one
	ln, err := vsock.ListenContextID(unix.VMADDR_CID_ANY, 1024, nil)
	if err != nil {
		con.Fail("vsock listen: %v", err)
	}
	say("listening")
	go func() {
		for {
			time.Sleep(50 * time.Millisecond)
			n := ticks.Add(1)
			say("tick %d", n)
			if n%20 == 0 {
				say("irqs %s", virtioIRQs())
			}
		}
	}()
	for {
		c, err := ln.Accept()
		if err != nil {
			// a transport reset after a restore fails pending accepts
			// on some kernels: listen on
			say("accept: %v", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		go serve(c)
	}
}

func serve(c io.ReadWriteCloser) {
	defer c.Close()
	r := bufio.NewReader(c)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		cmd, arg, _ := strings.Cut(strings.TrimSpace(line), " ")
		switch cmd {
		case "echo":
			fmt.Fprintf(c, "%s\n", arg)
		case "ticks":
			fmt.Fprintf(c, "%d\n", ticks.Load())
		case "disk":
			fmt.Fprintf(c, "%s\n", readDisk())
		case "rng":
			fmt.Fprintf(c, "%s\n", readHex("/dev/hwrng", 16))
		default:
			fmt.Fprintf(c, "unknown %q\n", cmd)
		}
	}
}

// virtioIRQs summarises the virtio lines of /proc/interrupts.
func virtioIRQs() string {
	b, err := os.ReadFile("/proc/interrupts")
	if err != nil {
		return err.Error()
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, "virtio") || strings.Contains(l, "ttyS") || strings.Contains(l, "LOC") {
			out = append(out, strings.Join(strings.Fields(l), " "))
		}
	}
	return strings.Join(out, " | ")
}

// readDisk waits up to 5 s for /dev/vda to have a size, then reads it.
func readDisk() string {
	for i := 0; i < 500; i++ {
		b, err := os.ReadFile("/sys/class/block/vda/size")
		if err == nil && strings.TrimSpace(string(b)) != "0" {
			return readHex("/dev/vda", 16)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return "error: /dev/vda has no size"
}

func readHex(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return "error: " + err.Error()
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := io.ReadFull(f, b); err != nil {
		return "error: " + err.Error()
	}
	return hex.EncodeToString(b)
}
