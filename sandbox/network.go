// This file owns the network half of the driver contract: what a pod
// asks of its interface, the network the network layer set up for it
// (package network), and its traffic counters.
package sandbox

import (
	"fmt"
	"net"
	"regexp"
	"strings"
)

// InterfaceRequest is the pod's wish for its interface; zero fields take
// the network's choice.
type InterfaceRequest struct {
	IfName, IP, MAC, Gateway, Bridge string
	MTU                              int
}

// Network is a pod's network as the network layer set it up: a network
// namespace holding the pod's interface(s). The local driver runs the
// pod's processes in Netns; the kvm driver bridges each interface to the
// VM's NIC there and the agent configures the guest's copy of it.
type Network struct {
	Name       string // the network (CNI network name)
	Netns      string // the pinned namespace
	Interfaces []Interface
	Routes     []Route
}

// Interface is one interface of the pod.
type Interface struct {
	Name  string // inside the pod, e.g. eth0
	MAC   string // its address (a VM's NIC takes the same)
	MTU   int
	Addrs []string // CIDR, e.g. 192.168.123.5/24
}

// Route is one route of the pod; Gateway "" is on-link.
type Route struct {
	Dst     string // CIDR
	Gateway string
}

// NetCounters are an interface's traffic counters.
type NetCounters struct {
	Name                                    string
	RxBytes, RxPackets, RxErrors, RxDropped uint64
	TxBytes, TxPackets, TxErrors, TxDropped uint64
}

// Networked is implemented by a sandbox that has a network.
type Networked interface {
	Network() *Network
	NetCounters() ([]NetCounters, error)
}

var ifNameRE = regexp.MustCompile(`^[a-zA-Z][a-zA-Z0-9_.-]{0,14}$`)

// Validate checks a request on its own (at pod creation, before any
// network exists).
func (r InterfaceRequest) Validate() error {
	if r.IfName != "" && !ifNameRE.MatchString(r.IfName) {
		return fmt.Errorf("interface name %q: 1-15 letters, digits, '_', '.', '-', starting with a letter", r.IfName)
	}
	if r.IP != "" {
		if _, err := ParseIP(r.IP); err != nil {
			return err
		}
	}
	if r.MAC != "" {
		hw, err := net.ParseMAC(r.MAC)
		if err != nil || len(hw) != 6 {
			return fmt.Errorf("mac %q: not an Ethernet address", r.MAC)
		}
		if hw[0]&1 != 0 {
			return fmt.Errorf("mac %q: a multicast address", r.MAC)
		}
	}
	if r.Gateway != "" && net.ParseIP(r.Gateway) == nil {
		return fmt.Errorf("gateway %q: not an IP address", r.Gateway)
	}
	if r.MTU != 0 && (r.MTU < 576 || r.MTU > 65535) {
		return fmt.Errorf("mtu %d: between 576 and 65535", r.MTU)
	}
	if r.Bridge != "" && !ifNameRE.MatchString(r.Bridge) {
		return fmt.Errorf("bridge %q: not an interface name", r.Bridge)
	}
	return nil
}

// ParseIP parses an address, optionally with a /prefix (which must be
// valid; only the address is returned).
func ParseIP(s string) (net.IP, error) {
	a := s
	if i := strings.IndexByte(a, '/'); i >= 0 {
		if _, _, err := net.ParseCIDR(a); err != nil {
			return nil, fmt.Errorf("ip %q: %v", s, err)
		}
		a = a[:i]
	}
	ip := net.ParseIP(a)
	if ip == nil {
		return nil, fmt.Errorf("ip %q: not an IP address", s)
	}
	return ip, nil
}
