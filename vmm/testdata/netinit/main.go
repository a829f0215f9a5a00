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
// The measurements are internal/tcpbench's client (its doc has the
// protocol, one TCP connection per measurement); the console lines go
// through internal/guestinit.
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
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/hyperhq/hyperd-go/internal/guestinit"
	"github.com/hyperhq/hyperd-go/internal/tcpbench"
)

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
	console := guestinit.Start("HYPERD-NET")
	cmdline, _ := os.ReadFile("/proc/cmdline")
	st := parseCmdline(string(cmdline))
	ifname, mac, err := linkUp(st.addr)
	if err != nil {
		console.Fail("network: %v", err)
	}
	console.Say("up iface=%s mac=%s addr=%s", ifname, mac, st.addr)
	// the link has just come up: the first ARP exchange may be under way
	c := tcpbench.Client{Addr: net.JoinHostPort(st.host, strconv.Itoa(st.port)), DialFor: time.Minute}
	n := int64(st.mib) << 20

	g, h, err := c.Sink(n)
	if err != nil {
		console.Fail("tx: %v", err)
	}
	console.Say("tx bytes=%d ns=%d host_ns=%d", n, g.Nanoseconds(), h.Nanoseconds())
	g, h, err = c.Source(n)
	if err != nil {
		console.Fail("rx: %v", err)
	}
	console.Say("rx bytes=%d ns=%d host_ns=%d", n, g.Nanoseconds(), h.Nanoseconds())
	rtts, err := c.Ping(st.pings)
	if err != nil {
		console.Fail("rtt: %v", err)
	}
	slices.Sort(rtts)
	console.Say("rtt pings=%d median_ns=%d min_ns=%d max_ns=%d", len(rtts), rtts[len(rtts)/2].Nanoseconds(), rtts[0].Nanoseconds(), rtts[len(rtts)-1].Nanoseconds())
	console.Say("done")
	console.PowerOff()
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
