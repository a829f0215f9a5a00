// This file owns the pod's network configuration by the agent: the
// interfaces and routes of OpSetupPod (PodSetup.Interfaces, .Routes). In a
// VM each interface is the virtio-net NIC whose MAC the daemon names (the
// MAC of the pod's CNI veth): the agent renames it, sets its MTU, adds its
// addresses and brings it up, then adds the routes. A VM restored from a
// template has the template's NIC, with another MAC: the one unconfigured
// virtio-net NIC is then given the MAC first. Everything the daemon
// sent is validated before anything is changed. DNS (resolv.conf) stays
// agent.go's.

package agent

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/hyperhq/hyperd-go/agent/protocol"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// linkWait is how long setupNetwork waits for the links the daemon names
// to appear: the virtio-net driver may probe the NIC after the agent has
// started.
const linkWait = 5 * time.Second

// netMu serialises network setups: concurrent setup requests must not
// interleave their renames.
var netMu sync.Mutex

// netIface is a validated protocol.Interface.
type netIface struct {
	name  string
	mac   net.HardwareAddr
	mtu   int
	addrs []*net.IPNet // host address and prefix (not masked)
}

// netRoute is a validated protocol.Route; iface indexes the netIface the
// route goes through, -1 for none (the kernel picks the device from the
// gateway); onlink is set for a gateway outside every subnet of that
// interface.
type netRoute struct {
	dst    *net.IPNet
	gw     net.IP
	iface  int
	onlink bool
}

// validIfName reports whether the kernel takes name as an interface name
// (dev_valid_name): 1 to 15 bytes, not "." or "..", no '/', ':',
// whitespace or control characters.
func validIfName(name string) bool {
	if name == "" || len(name) >= unix.IFNAMSIZ || name == "." || name == ".." {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c == '/' || c == ':' || c == ' ' || c <= 0x1f || c == 0x7f {
			return false
		}
	}
	return true
}

func badNet(format string, a ...any) *protocol.Error {
	return protocol.Errorf(protocol.CodeBadRequest, format, a...)
}

// isV4 reports whether ip is an IPv4 address (including its 16-byte form).
func isV4(ip net.IP) bool { return ip.To4() != nil }

// parseNetwork validates the interfaces and routes of a PodSetup.
func parseNetwork(ifs []protocol.Interface, routes []protocol.Route) ([]netIface, []netRoute, *protocol.Error) {
	var out []netIface
	names := map[string]bool{}
	macs := map[string]bool{}
	for i, in := range ifs {
		if !validIfName(in.Name) {
			return nil, nil, badNet("interface %d: bad name %q (1-15 characters, no '/', ':' or whitespace)", i, in.Name)
		}
		if names[in.Name] {
			return nil, nil, badNet("interface name %q given twice", in.Name)
		}
		names[in.Name] = true
		mac, err := net.ParseMAC(in.MAC)
		if err != nil || len(mac) != 6 {
			return nil, nil, badNet("interface %s: bad mac %q (want an Ethernet address like 02:42:ac:11:00:02)", in.Name, in.MAC)
		}
		if macs[mac.String()] {
			return nil, nil, badNet("interface mac %s given twice", mac)
		}
		macs[mac.String()] = true
		if in.MTU != 0 && (in.MTU < 68 || in.MTU > 65535) {
			return nil, nil, badNet("interface %s: bad mtu %d (68-65535, or 0 to keep the link's)", in.Name, in.MTU)
		}
		ni := netIface{name: in.Name, mac: mac, mtu: in.MTU}
		for _, a := range in.Addrs {
			ip, n, err := net.ParseCIDR(a)
			if err != nil {
				return nil, nil, badNet("interface %s: bad address %q (want CIDR, e.g. 10.0.0.2/24)", in.Name, a)
			}
			if v4 := ip.To4(); v4 != nil {
				ip = v4
			}
			if ip.IsUnspecified() || ip.IsMulticast() {
				return nil, nil, badNet("interface %s: address %q is not a host address", in.Name, a)
			}
			ni.addrs = append(ni.addrs, &net.IPNet{IP: ip, Mask: n.Mask})
		}
		out = append(out, ni)
	}
	var rs []netRoute
	for _, r := range routes {
		ip, dst, err := net.ParseCIDR(r.Dst)
		if err != nil {
			return nil, nil, badNet("route: bad dst %q (want CIDR, e.g. 0.0.0.0/0)", r.Dst)
		}
		if !ip.Equal(dst.IP) {
			return nil, nil, badNet("route: dst %q is not a network address (%s)", r.Dst, dst)
		}
		nr := netRoute{dst: dst, iface: -1}
		if r.Gateway != "" {
			gw := net.ParseIP(r.Gateway)
			if gw == nil {
				return nil, nil, badNet("route %s: bad gateway %q", r.Dst, r.Gateway)
			}
			if isV4(gw) != isV4(dst.IP) {
				return nil, nil, badNet("route %s: gateway %s is of another address family", r.Dst, r.Gateway)
			}
			if gw.IsUnspecified() || gw.IsMulticast() {
				return nil, nil, badNet("route %s: bad gateway %q", r.Dst, r.Gateway)
			}
			if v4 := gw.To4(); v4 != nil {
				gw = v4
			}
			nr.gw = gw
			// the interface whose subnet holds the gateway; otherwise
			// the first interface, with the gateway declared on-link
		find:
			for i, ni := range out {
				for _, a := range ni.addrs {
					if isV4(a.IP) == isV4(gw) && a.Contains(gw) {
						nr.iface = i
						break find
					}
				}
			}
			if nr.iface < 0 && len(out) > 0 {
				nr.iface, nr.onlink = 0, true
			}
		} else {
			if len(out) == 0 {
				return nil, nil, badNet("route %s: no gateway and no interface to reach it through", r.Dst)
			}
			nr.iface = 0
		}
		rs = append(rs, nr)
	}
	return out, rs, nil
}

// setupNetwork configures the pod's interfaces and routes in the agent's
// network namespace; an interface whose MAC no link has may take the one
// unconfigured virtio-net NIC (a VM restored from a template).
func setupNetwork(ifs []protocol.Interface, routes []protocol.Route) *protocol.Error {
	return configureNetwork(nil, ifs, routes, linkWait, virtioNIC)
}

// nicDriver is the driver of a VM's NICs (ethtool's name for it).
const nicDriver = "virtio_net"

// linkDriver returns the kernel driver of the link named name in the
// calling thread's network namespace (ethtool ETHTOOL_GDRVINFO).
func linkDriver(name string) (string, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return "", err
	}
	defer unix.Close(fd)
	info, err := unix.IoctlGetEthtoolDrvinfo(fd, name)
	if err != nil {
		return "", err
	}
	return unix.ByteSliceToString(info.Driver[:]), nil
}

// virtioNIC reports whether link is a virtio-net NIC, one that may be
// given a pod interface's MAC.
func virtioNIC(link netlink.Link) bool {
	d, err := linkDriver(link.Attrs().Name)
	return err == nil && d == nicDriver
}

// unconfigured reports whether addrs (a link's) hold nothing but
// link-local addresses: the kernel's own IPv6 fe80::/10, or IPv4
// 169.254.0.0/16.
func unconfigured(addrs []netlink.Addr) bool {
	for _, a := range addrs {
		if a.IPNet == nil || !a.IP.IsLinkLocalUnicast() {
			return false
		}
	}
	return true
}

// configureNetwork does setupNetwork's work through h (nil: a handle on
// the calling thread's network namespace), waiting up to wait for the
// links. It validates everything first; then, for each interface, the
// link with its MAC is renamed (set down for that), given its MTU and
// addresses and brought up, and the routes are replaced. Running it again
// with the same data changes nothing and succeeds.
//
// When no link has an interface's MAC, the link that adoptable accepts
// (nil: none), whose MAC no interface of the setup names, which no earlier
// interface of the setup took and which has no address but link-local
// ones, gets that MAC (set down for that) and is then configured as
// above: a VM restored from a template has the template's NIC, with the
// template's MAC. There must be exactly one such link; several are a
// conflict at once, none is waited for like a missing MAC.
func configureNetwork(h *netlink.Handle, ifs []protocol.Interface, routes []protocol.Route, wait time.Duration, adoptable func(netlink.Link) bool) *protocol.Error {
	nifs, nroutes, perr := parseNetwork(ifs, routes)
	if perr != nil {
		return perr
	}
	if len(nifs) == 0 && len(nroutes) == 0 {
		return nil
	}
	netMu.Lock()
	defer netMu.Unlock()
	if h == nil {
		var err error
		if h, err = netlink.NewHandle(unix.NETLINK_ROUTE); err != nil {
			return protocol.Errorf(protocol.CodeInternal, "netlink: %v", err)
		}
		defer h.Close()
	}
	deadline := time.Now().Add(wait)
	index := make([]int, len(nifs)) // link index of each interface
	requested := map[string]bool{}
	for _, ni := range nifs {
		requested[ni.mac.String()] = true
	}
	used := map[int]bool{} // links taken by earlier interfaces
	for i, ni := range nifs {
		link, adopt, perr := waitLink(h, ni.mac, deadline, adoptable, requested, used)
		if perr != nil {
			return perr
		}
		if adopt {
			if link, perr = setLinkMAC(h, link, ni.mac); perr != nil {
				return perr
			}
		}
		used[link.Attrs().Index] = true
		if perr := configureLink(h, link, ni, nifs[i+1:]); perr != nil {
			return perr
		}
		index[i] = link.Attrs().Index
	}
	for _, r := range nroutes {
		rt := &netlink.Route{Dst: r.dst, Gw: r.gw}
		if r.iface >= 0 {
			rt.LinkIndex = index[r.iface]
		}
		if r.gw == nil && isV4(r.dst.IP) {
			rt.Scope = netlink.SCOPE_LINK
		}
		if r.onlink {
			rt.Flags = int(netlink.FLAG_ONLINK)
		}
		if err := h.RouteReplace(rt); err != nil {
			via := ""
			if r.gw != nil {
				via = " via " + r.gw.String()
			}
			return protocol.Errorf(protocol.CodeInternal, "route %s%s: %v", r.dst, via, err)
		}
	}
	return nil
}

// linkList is h.LinkList, retried while the dump was interrupted.
func linkList(h *netlink.Handle) ([]netlink.Link, error) {
	for try := 0; ; try++ {
		links, err := h.LinkList()
		if errors.Is(err, netlink.ErrDumpInterrupted) && try < 10 {
			continue
		}
		return links, err
	}
}

// waitLink returns the link with hardware address mac, polling until
// deadline for it to appear; or, once no link has it, the one link that
// could take it (configureNetwork's rules: adoptable, its MAC not in
// requested, its index not in used, unconfigured), with adopt set.
func waitLink(h *netlink.Handle, mac net.HardwareAddr, deadline time.Time, adoptable func(netlink.Link) bool, requested map[string]bool, used map[int]bool) (link netlink.Link, adopt bool, perr *protocol.Error) {
	for {
		links, err := linkList(h)
		if err != nil {
			return nil, false, protocol.Errorf(protocol.CodeInternal, "list links: %v", err)
		}
		for _, l := range links {
			if bytes.Equal(l.Attrs().HardwareAddr, mac) {
				return l, false, nil
			}
		}
		if adoptable != nil {
			var cands []netlink.Link
			for _, l := range links {
				a := l.Attrs()
				if len(a.HardwareAddr) != 6 || requested[a.HardwareAddr.String()] || used[a.Index] || !adoptable(l) {
					continue
				}
				addrs, err := h.AddrList(l, netlink.FAMILY_ALL)
				if err != nil {
					return nil, false, protocol.Errorf(protocol.CodeInternal, "addresses of %s: %v", a.Name, err)
				}
				if unconfigured(addrs) {
					cands = append(cands, l)
				}
			}
			switch len(cands) {
			case 0:
			case 1:
				return cands[0], true, nil
			default:
				var names []string
				for _, l := range cands {
					names = append(names, fmt.Sprintf("%s (mac %s)", l.Attrs().Name, l.Attrs().HardwareAddr))
				}
				return nil, false, protocol.Errorf(protocol.CodeConflict, "no network interface with mac %s, and %d unconfigured NICs could take it: %s", mac, len(cands), strings.Join(names, ", "))
			}
		}
		if !time.Now().Before(deadline) {
			return nil, false, protocol.Errorf(protocol.CodeBadRequest, "no network interface with mac %s, nor an unconfigured NIC to give it", mac)
		}
		time.Sleep(min(50*time.Millisecond, time.Until(deadline)+time.Millisecond))
	}
}

// setLinkMAC sets link down and gives it the hardware address mac, and
// returns it as it is then. (virtio_net can change its MAC while up,
// IFF_LIVE_ADDR_CHANGE, and does not tell the device unless
// VIRTIO_NET_F_CTRL_MAC_ADDR was negotiated; down is what any driver
// takes, and configureLink brings the link up.)
func setLinkMAC(h *netlink.Handle, link netlink.Link, mac net.HardwareAddr) (netlink.Link, *protocol.Error) {
	a := link.Attrs()
	if err := h.LinkSetDown(link); err != nil {
		return nil, protocol.Errorf(protocol.CodeInternal, "set %s (mac %s) down: %v", a.Name, a.HardwareAddr, err)
	}
	if err := h.LinkSetHardwareAddr(link, mac); err != nil {
		return nil, protocol.Errorf(protocol.CodeInternal, "give %s (mac %s) the mac %s: %v", a.Name, a.HardwareAddr, mac, err)
	}
	l, err := h.LinkByIndex(a.Index)
	if err != nil {
		return nil, protocol.Errorf(protocol.CodeInternal, "link %s: %v", a.Name, err)
	}
	return l, nil
}

// configureLink gives link ni's name, MTU and addresses and brings it up.
// A link that holds ni's name and is one of the interfaces still to come
// (a swap of names) is moved aside to a temporary name; any other holder
// of the name is a conflict.
func configureLink(h *netlink.Handle, link netlink.Link, ni netIface, rest []netIface) *protocol.Error {
	attrs := link.Attrs()
	if attrs.Name != ni.name {
		holder, err := h.LinkByName(ni.name)
		var nf netlink.LinkNotFoundError
		switch {
		case errors.As(err, &nf):
		case err != nil:
			return protocol.Errorf(protocol.CodeInternal, "link %s: %v", ni.name, err)
		default:
			pending := false
			for _, r := range rest {
				if bytes.Equal(holder.Attrs().HardwareAddr, r.mac) {
					pending = true
				}
			}
			if !pending {
				return protocol.Errorf(protocol.CodeConflict, "interface name %s is taken by another link (mac %s)", ni.name, holder.Attrs().HardwareAddr)
			}
			tmp := fmt.Sprintf("hyt%d", holder.Attrs().Index)
			if err := h.LinkSetDown(holder); err != nil {
				return protocol.Errorf(protocol.CodeInternal, "set %s down: %v", ni.name, err)
			}
			if err := h.LinkSetName(holder, tmp); err != nil {
				return protocol.Errorf(protocol.CodeInternal, "rename %s to %s: %v", ni.name, tmp, err)
			}
		}
		if err := h.LinkSetDown(link); err != nil {
			return protocol.Errorf(protocol.CodeInternal, "set %s (mac %s) down: %v", attrs.Name, ni.mac, err)
		}
		if err := h.LinkSetName(link, ni.name); err != nil {
			return protocol.Errorf(protocol.CodeInternal, "rename %s (mac %s) to %s: %v", attrs.Name, ni.mac, ni.name, err)
		}
	}
	if ni.mtu != 0 && attrs.MTU != ni.mtu {
		if err := h.LinkSetMTU(link, ni.mtu); err != nil {
			return protocol.Errorf(protocol.CodeInternal, "%s: set mtu %d: %v", ni.name, ni.mtu, err)
		}
	}
	for _, a := range ni.addrs {
		addr := &netlink.Addr{IPNet: a}
		if !isV4(a.IP) {
			// the daemon (CNI) owns the address: no duplicate address
			// detection holding it tentative after the link comes up
			addr.Flags = unix.IFA_F_NODAD
		}
		if err := h.AddrAdd(link, addr); err != nil && !errors.Is(err, unix.EEXIST) {
			return protocol.Errorf(protocol.CodeInternal, "%s: add address %s: %v", ni.name, a, err)
		}
	}
	if err := h.LinkSetUp(link); err != nil {
		return protocol.Errorf(protocol.CodeInternal, "set %s up: %v", ni.name, err)
	}
	return nil
}
