// Command netinit is the /init of the initramfs vmm's BenchmarkVirtioNet
// boots (this file owns the guest side of that benchmark): it mounts /dev
// and /proc, brings up lo and the virtio-net NIC with netlink (address
// netbench.addr, default 10.0.0.2/24), then, against the benchmark's TCP
// server on netbench.host (default 10.0.0.1) port netbench.port (5201),
// measures TCP throughput guest->host and host->guest (netbench.mib MiB
// each way, default 64) and the TCP round-trip time (netbench.pings
// one-byte ping-pongs, default 200, the median), prints each result as a
// "HYPERD-NET: " line of key=value words on the serial console, and powers
// the machine off. The settings come from /proc/cmdline (dotted words, which
// the kernel leaves to us).
//
// The protocol, one TCP connection per measurement, each opened by a
// command line from the guest:
//
//	SINK n      the guest sends n bytes; the host answers "OK <ns>\n", ns
//	            from its first byte read to its last
//	SOURCE n    the host sends n bytes; the guest answers "DONE\n" after the
//	            last, the host "OK <ns>\n", ns from its first write to DONE
//	ECHO        the host echoes every byte until EOF (the guest pings)
//
// Console lines (times in ns as each side measured them):
//
//	HYPERD-NET: up iface=eth0 mac=... addr=10.0.0.2/24
//	HYPERD-NET: tx bytes=N ns=GUEST host_ns=HOST
//	HYPERD-NET: rx bytes=N ns=GUEST host_ns=HOST
//	HYPERD-NET: rtt pings=K median_ns=M min_ns=A max_ns=B
//	HYPERD-NET: done
//	HYPERD-NET: FAIL <why>
package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

var console *os.File

func say(format string, args ...any) {
	fmt.Fprintf(console, "HYPERD-NET: "+format+"\n", args...)
}

func fail(format string, args ...any) {
	say("FAIL "+format, args...)
	poweroff()
}

func poweroff() {
	unix.Sync()
	unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	select {}
}

// settings are the netbench.* words of the kernel command line.
type settings struct {
	addr, host string
	port       int
	mib        int
	pings      int
}

func parseCmdline(s string) settings {
	st := settings{addr: "10.0.0.2/24", host: "10.0.0.1", port: 5201, mib: 64, pings: 200}
	for _, w := range strings.Fields(s) {
		k, v, ok := strings.Cut(w, "=")
		if !ok {
			continue
		}
		n, err := strconv.Atoi(v)
		switch k {
		case "netbench.addr":
			st.addr = v
		case "netbench.host":
			st.host = v
		case "netbench.port":
			if err == nil && n > 0 {
				st.port = n
			}
		case "netbench.mib":
			if err == nil && n > 0 {
				st.mib = n
			}
		case "netbench.pings":
			if err == nil && n > 0 {
				st.pings = n
			}
		}
	}
	return st
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
	cmdline, _ := os.ReadFile("/proc/cmdline")
	st := parseCmdline(string(cmdline))
	ifname, mac, err := linkUp(st.addr)
	if err != nil {
		fail("network: %v", err)
	}
	say("up iface=%s mac=%s addr=%s", ifname, mac, st.addr)
	server := net.JoinHostPort(st.host, strconv.Itoa(st.port))
	n := int64(st.mib) << 20

	gns, hns, err := tx(server, n)
	if err != nil {
		fail("tx: %v", err)
	}
	say("tx bytes=%d ns=%d host_ns=%d", n, gns, hns)
	gns, hns, err = rx(server, n)
	if err != nil {
		fail("rx: %v", err)
	}
	say("rx bytes=%d ns=%d host_ns=%d", n, gns, hns)
	rtts, err := ping(server, st.pings)
	if err != nil {
		fail("rtt: %v", err)
	}
	slices.Sort(rtts)
	say("rtt pings=%d median_ns=%d min_ns=%d max_ns=%d", len(rtts), rtts[len(rtts)/2], rtts[0], rtts[len(rtts)-1])
	say("done")
	poweroff()
}

// linkUp brings lo and the first Ethernet link up and gives the latter
// addr; it returns that link's name and MAC.
func linkUp(addr string) (string, string, error) {
	a, err := netlink.ParseAddr(addr)
	if err != nil {
		return "", "", fmt.Errorf("netbench.addr %q: %w", addr, err)
	}
	links, err := netlink.LinkList()
	if err != nil {
		return "", "", err
	}
	var eth netlink.Link
	var names []string
	for _, l := range links {
		names = append(names, l.Attrs().Name)
		if l.Attrs().Name == "lo" {
			if err := netlink.LinkSetUp(l); err != nil {
				return "", "", fmt.Errorf("lo up: %w", err)
			}
			continue
		}
		if eth == nil && len(l.Attrs().HardwareAddr) == 6 {
			eth = l
		}
	}
	if eth == nil {
		return "", "", fmt.Errorf("no Ethernet link (links: %v): is virtio-net there?", names)
	}
	if err := netlink.AddrAdd(eth, a); err != nil {
		return "", "", fmt.Errorf("%s: address %s: %w", eth.Attrs().Name, addr, err)
	}
	if err := netlink.LinkSetUp(eth); err != nil {
		return "", "", fmt.Errorf("%s up: %w", eth.Attrs().Name, err)
	}
	return eth.Attrs().Name, eth.Attrs().HardwareAddr.String(), nil
}

// dial connects to the server, retrying for a while: the link has just
// come up and the first ARP exchange may be under way.
func dial(server string) (*net.TCPConn, error) {
	var err error
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		var c net.Conn
		if c, err = net.DialTimeout("tcp", server, 5*time.Second); err == nil {
			return c.(*net.TCPConn), nil
		}
	}
	return nil, err
}

// okLine reads the host's "OK <ns>" answer.
func okLine(r *bufio.Reader) (int64, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return 0, fmt.Errorf("the host's answer: %q %w", line, err)
	}
	ns, ok := strings.CutPrefix(strings.TrimSpace(line), "OK ")
	if !ok {
		return 0, fmt.Errorf("the host answered %q", line)
	}
	return strconv.ParseInt(ns, 10, 64)
}

// tx sends n bytes to the host's sink.
func tx(server string, n int64) (guestNs, hostNs int64, err error) {
	c, err := dial(server)
	if err != nil {
		return 0, 0, err
	}
	defer c.Close()
	buf := make([]byte, 64<<10)
	for i := range buf {
		buf[i] = byte(i)
	}
	t0 := time.Now()
	if _, err := fmt.Fprintf(c, "SINK %d\n", n); err != nil {
		return 0, 0, err
	}
	for left := n; left > 0; {
		k, err := c.Write(buf[:min(left, int64(len(buf)))])
		if err != nil {
			return 0, 0, err
		}
		left -= int64(k)
	}
	hostNs, err = okLine(bufio.NewReader(c))
	return time.Since(t0).Nanoseconds(), hostNs, err
}

// rx receives n bytes from the host's source.
func rx(server string, n int64) (guestNs, hostNs int64, err error) {
	c, err := dial(server)
	if err != nil {
		return 0, 0, err
	}
	defer c.Close()
	r := bufio.NewReaderSize(c, 256<<10)
	t0 := time.Now()
	if _, err := fmt.Fprintf(c, "SOURCE %d\n", n); err != nil {
		return 0, 0, err
	}
	if got, err := io.CopyN(io.Discard, r, n); err != nil {
		return 0, 0, fmt.Errorf("received %d of %d bytes: %w", got, n, err)
	}
	guestNs = time.Since(t0).Nanoseconds()
	if _, err := io.WriteString(c, "DONE\n"); err != nil {
		return 0, 0, err
	}
	hostNs, err = okLine(r)
	return guestNs, hostNs, err
}

// ping does k one-byte round trips (after 10 not counted) and returns
// each one's time.
func ping(server string, k int) ([]int64, error) {
	c, err := dial(server)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	c.SetNoDelay(true)
	if _, err := io.WriteString(c, "ECHO\n"); err != nil {
		return nil, err
	}
	const warm = 10
	b := []byte{'p'}
	var rtts []int64
	for i := 0; i < warm+k; i++ {
		t0 := time.Now()
		if _, err := c.Write(b); err != nil {
			return nil, err
		}
		if _, err := io.ReadFull(c, b); err != nil {
			return nil, fmt.Errorf("pong %d: %w", i, err)
		}
		if i >= warm {
			rtts = append(rtts, time.Since(t0).Nanoseconds())
		}
	}
	return rtts, nil
}
