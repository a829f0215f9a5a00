// This file owns a pod VM's network plumbing on the host: for each of the
// pod's interfaces (a CNI veth in the pod's network namespace), a tap in
// that namespace whose fd the VM process inherits for its virtio-net
// device, and tc ingress redirects that pass every frame from the veth to
// the tap and back (Kata's "tcfilter" model: no bridge, no address on the
// tap; the guest NIC takes the veth's MAC, so the CNI network sees the
// pod it set up).
package kvmdrv

import (
	"crypto/rand"
	"fmt"
	"os"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/hyperhq/hyperd-go/agent/protocol"
	"github.com/hyperhq/hyperd-go/internal/netns"
	"github.com/hyperhq/hyperd-go/sandbox"
)

// plumbNetwork creates the taps and redirects in n's namespace and returns
// the taps' files (for the VM process's ExtraFiles, in order) and the
// `vm run --net` flags that hand them to the VM, the first at fd firstFD.
// The caller closes the files once the VM process has them; the taps then
// live as long as the VM process (they are not persistent), and the
// redirects with them.
func plumbNetwork(n *sandbox.Network, firstFD int) (files []*os.File, args []string, err error) {
	defer func() {
		if err != nil {
			for _, f := range files {
				f.Close()
			}
			files = nil
		}
	}()
	err = netns.Do(n.Netns, func() error {
		for i, iface := range n.Interfaces {
			tapName := fmt.Sprintf("tap%d_%s", i, iface.Name)
			if len(tapName) > unix.IFNAMSIZ-1 {
				tapName = tapName[:unix.IFNAMSIZ-1]
			}
			f, err := openTap(tapName)
			if err != nil {
				return err
			}
			files = append(files, f)
			veth, err := netlink.LinkByName(iface.Name)
			if err != nil {
				return fmt.Errorf("pod interface %s: %w", iface.Name, err)
			}
			tap, err := netlink.LinkByName(tapName)
			if err != nil {
				return fmt.Errorf("tap %s: %w", tapName, err)
			}
			if err := netlink.LinkSetMTU(tap, veth.Attrs().MTU); err != nil {
				return fmt.Errorf("tap %s mtu: %w", tapName, err)
			}
			if err := netlink.LinkSetUp(tap); err != nil {
				return fmt.Errorf("tap %s up: %w", tapName, err)
			}
			if err := redirect(veth, tap); err != nil {
				return err
			}
			if err := redirect(tap, veth); err != nil {
				return err
			}
			mtu := iface.MTU
			if mtu == 0 {
				mtu = veth.Attrs().MTU
			}
			args = append(args, "--net", fmt.Sprintf("fd=%d,mac=%s,mtu=%d", firstFD+i, iface.MAC, mtu))
		}
		return nil
	})
	return files, args, err
}

// openTap creates a tap in the calling thread's namespace: Ethernet
// frames without packet info, with a virtio_net_hdr (the VMM sets its size
// and offloads when it adopts the fd).
func openTap(name string) (*os.File, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("tap %s: /dev/net/tun: %w", name, err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("tap %s: %w", name, err)
	}
	ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("tap %s: TUNSETIFF: %w", name, err)
	}
	return os.NewFile(uintptr(fd), "tap:"+name), nil
}

// redirect sends every frame arriving on from out of to: an ingress qdisc
// on from with a match-all u32 filter whose action is a mirred egress
// redirect (cls_u32 is in every kernel that has tc; matchall is not).
func redirect(from, to netlink.Link) error {
	qd := &netlink.Ingress{QdiscAttrs: netlink.QdiscAttrs{LinkIndex: from.Attrs().Index, Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_INGRESS}}
	if err := netlink.QdiscAdd(qd); err != nil {
		return fmt.Errorf("ingress qdisc on %s: %w", from.Attrs().Name, err)
	}
	f := &netlink.U32{
		FilterAttrs: netlink.FilterAttrs{LinkIndex: from.Attrs().Index, Parent: netlink.MakeHandle(0xffff, 0), Priority: 1, Protocol: unix.ETH_P_ALL},
		Actions: []netlink.Action{&netlink.MirredAction{
			ActionAttrs:  netlink.ActionAttrs{Action: netlink.TC_ACT_STOLEN},
			MirredAction: netlink.TCA_EGRESS_REDIR,
			Ifindex:      to.Attrs().Index,
		}},
	}
	if err := netlink.FilterAdd(f); err != nil {
		return fmt.Errorf("redirect %s -> %s: %w", from.Attrs().Name, to.Attrs().Name, err)
	}
	return nil
}

// podSetupEntropy is how many crypto/rand bytes a setup gives the guest's
// RNG (512 bits, twice what the kernel's CRNG needs to be seeded).
const podSetupEntropy = 64

// podSetup is what the agent configures in the guest once it answers:
// hostname, DNS, and the interfaces the VM's NICs stand for (matched by
// MAC) with their addresses and routes; and the VM's own identity, which a
// VM restored from a template does not have yet: the host's wall clock and
// fresh entropy for the guest's RNG (the caller sets Generation).
func podSetup(cfg sandbox.Config) protocol.PodSetup {
	ps := protocol.PodSetup{Hostname: cfg.Hostname, DNS: cfg.DNS, DNSSearch: cfg.DNSSearch, DNSOptions: cfg.DNSOptions,
		Time: time.Now().UnixNano(), Entropy: make([]byte, podSetupEntropy)}
	rand.Read(ps.Entropy) // never fails (crypto/rand)
	if n := cfg.Network; n != nil {
		for _, i := range n.Interfaces {
			ps.Interfaces = append(ps.Interfaces, protocol.Interface{Name: i.Name, MAC: i.MAC, MTU: i.MTU, Addrs: i.Addrs})
		}
		for _, r := range n.Routes {
			ps.Routes = append(ps.Routes, protocol.Route{Dst: r.Dst, Gateway: r.Gateway})
		}
	}
	return ps
}
