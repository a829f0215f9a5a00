// This file owns a pod's network through CNI: the namespace, ADD (with
// the pod's requested address, MAC, MTU and gateway), CHECK and DEL with
// the configuration cached at ADD, and the list of pods that have one.
package network

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"github.com/hyperhq/hyperd-go/internal/netns"
	"github.com/hyperhq/hyperd-go/sandbox"
)

// Options of New.
type Options struct {
	ConfDir  string   // CNI network configurations (*.conflist, *.conf); default /etc/cni/net.d
	BinDirs  []string // CNI plugins; default /usr/lib/cni, /opt/cni/bin
	StateDir string   // the manager's own: netns/ (pinned namespaces), cache/ (CNI's cached results)
	// DataDir is where the default network's host-local IPAM keeps its
	// leases (written into the conflist New creates); default StateDir/ipam.
	DataDir string
	Log     *slog.Logger
}

// Manager sets up and tears down pod networks.
type Manager struct {
	o   Options
	cni *libcni.CNIConfig
	log *slog.Logger
	mu  sync.Mutex // one CNI operation per pod at a time (map of locks is overkill: pods start in seconds)
}

// DefaultConfDir and DefaultBinDirs are the usual CNI locations (the
// latter: Debian's containernetworking-plugins, then the upstream tarball's).
var (
	DefaultConfDir = "/etc/cni/net.d"
	DefaultBinDirs = []string{"/usr/lib/cni", "/opt/cni/bin"}
)

// IfName is the pod's interface when the pod names none.
const IfName = "eth0"

// New returns a manager, writing the default network (DefaultConfList) into
// ConfDir if it holds no network configuration.
func New(o Options) (*Manager, error) {
	if o.ConfDir == "" {
		o.ConfDir = DefaultConfDir
	}
	if len(o.BinDirs) == 0 {
		o.BinDirs = DefaultBinDirs
	}
	if o.StateDir == "" {
		return nil, errors.New("network: no state dir")
	}
	if o.DataDir == "" {
		o.DataDir = filepath.Join(o.StateDir, "ipam")
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	for _, d := range []string{o.StateDir, filepath.Join(o.StateDir, "netns"), filepath.Join(o.StateDir, "cache")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("network: %w", err)
		}
	}
	m := &Manager{o: o, log: o.Log, cni: libcni.NewCNIConfigWithCacheDir(o.BinDirs, filepath.Join(o.StateDir, "cache"), nil)}
	files, err := libcni.ConfFiles(o.ConfDir, []string{".conflist", ".conf", ".json"})
	if err != nil {
		return nil, fmt.Errorf("network: %w", err)
	}
	if len(files) == 0 {
		if err := os.MkdirAll(o.ConfDir, 0o755); err != nil {
			return nil, fmt.Errorf("network: %w", err)
		}
		p := filepath.Join(o.ConfDir, DefaultConfFile)
		if err := os.WriteFile(p, DefaultConfList(o.DataDir), 0o644); err != nil {
			return nil, fmt.Errorf("network: writing the default network: %w", err)
		}
		m.log.Info("wrote the default pod network", "conf", p, "bridge", DefaultBridge, "subnet", DefaultSubnet)
	}
	list, err := m.conf()
	if err != nil {
		return nil, err
	}
	// every plugin the network names must be there now, not at the first
	// pod start
	for _, p := range list.Plugins {
		if _, err := invoke.FindInPath(p.Network.Type, o.BinDirs); err != nil {
			return nil, fmt.Errorf("network %s: CNI plugin %q not found in %s (Debian's containernetworking-plugins has the usual ones)", list.Name, p.Network.Type, strings.Join(o.BinDirs, ":"))
		}
	}
	return m, nil
}

// conf loads the network pods join: the first configuration in ConfDir
// by file name (kubelet's and containerd's rule).
func (m *Manager) conf() (*libcni.NetworkConfigList, error) {
	files, err := libcni.ConfFiles(m.o.ConfDir, []string{".conflist", ".conf", ".json"})
	if err != nil {
		return nil, fmt.Errorf("network: %w", err)
	}
	sort.Strings(files)
	for _, f := range files {
		var l *libcni.NetworkConfigList
		if strings.HasSuffix(f, ".conflist") {
			l, err = libcni.NetworkConfFromFile(f)
		} else {
			var c *libcni.NetworkConfig
			if c, err = libcni.ConfFromFile(f); err == nil {
				l, err = libcni.ConfListFromConf(c)
			}
		}
		if err != nil {
			return nil, fmt.Errorf("network: %s: %w", f, err)
		}
		if len(l.Plugins) == 0 {
			return nil, fmt.Errorf("network: %s has no plugins", f)
		}
		return l, nil
	}
	return nil, fmt.Errorf("network: no network configuration in %s", m.o.ConfDir)
}

// Name is the network pods join.
func (m *Manager) Name() string {
	l, err := m.conf()
	if err != nil {
		return ""
	}
	return l.Name
}

var podIDRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$`)

func (m *Manager) netnsPath(podID string) (string, error) {
	if !podIDRE.MatchString(podID) {
		return "", fmt.Errorf("network: bad pod id %q", podID)
	}
	return filepath.Join(m.o.StateDir, "netns", podID), nil
}

func (m *Manager) rt(podID, netns, ifName string, req sandbox.InterfaceRequest) *libcni.RuntimeConf {
	rt := &libcni.RuntimeConf{ContainerID: podID, NetNS: netns, IfName: ifName,
		Args: [][2]string{{"IgnoreUnknown", "1"}}}
	if req.IP != "" {
		ip, _ := sandbox.ParseIP(req.IP)
		rt.Args = append(rt.Args, [2]string{"IP", ip.String()})
	}
	return rt
}

// Setup gives pod podID a network namespace and its interface in the
// network. On any error nothing is left behind.
func (m *Manager) Setup(ctx context.Context, podID string, req sandbox.InterfaceRequest) (_ *sandbox.Network, err error) {
	if err := req.Validate(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	list, err := m.conf()
	if err != nil {
		return nil, err
	}
	if req.Bridge != "" {
		if b := bridgeOf(list); b != req.Bridge {
			return nil, fmt.Errorf("interface bridge %q: pods join network %q, whose bridge is %q", req.Bridge, list.Name, b)
		}
	}
	ns, err := m.netnsPath(podID)
	if err != nil {
		return nil, err
	}
	if netns.Is(ns) {
		// a leftover of a daemon that died mid-way: release it first
		m.teardownLocked(ctx, podID)
	}
	if err := netns.Create(ns); err != nil {
		return nil, err
	}
	ifName := req.IfName
	if ifName == "" {
		ifName = IfName
	}
	rt := m.rt(podID, ns, ifName, req)
	defer func() {
		if err != nil {
			m.cni.DelNetworkList(context.WithoutCancel(ctx), list, rt)
			netns.Remove(ns)
		}
	}()
	if err := netns.Do(ns, loopbackUp); err != nil {
		return nil, err
	}
	res, err := m.cni.AddNetworkList(ctx, list, rt)
	if err != nil {
		return nil, fmt.Errorf("network %s: %w", list.Name, err)
	}
	r, err := types100.NewResultFromResult(res)
	if err != nil {
		return nil, fmt.Errorf("network %s: result: %w", list.Name, err)
	}
	var out *sandbox.Network
	err = netns.Do(ns, func() error {
		var err error
		out, err = applyRequest(r, ifName, req)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("network %s: %w", list.Name, err)
	}
	out.Netns, out.Name = ns, list.Name
	return out, nil
}

// bridgeOf is the "bridge" of the list's bridge plugin, "" if none.
func bridgeOf(list *libcni.NetworkConfigList) string {
	for _, p := range list.Plugins {
		var c struct {
			Type   string `json:"type"`
			Bridge string `json:"bridge"`
		}
		if json.Unmarshal(p.Bytes, &c) == nil && c.Type == "bridge" {
			if c.Bridge == "" {
				return "cni0" // the bridge plugin's default
			}
			return c.Bridge
		}
	}
	return ""
}

func loopbackUp() error {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return err
	}
	return netlink.LinkSetUp(lo)
}

// applyRequest runs in the pod's namespace after ADD: it applies the MAC,
// MTU and gateway the pod asked for, checks the address, and describes
// the interface as the driver needs it.
func applyRequest(r *types100.Result, ifName string, req sandbox.InterfaceRequest) (*sandbox.Network, error) {
	link, err := netlink.LinkByName(ifName)
	if err != nil {
		return nil, fmt.Errorf("interface %s after ADD: %w", ifName, err)
	}
	if req.MAC != "" {
		hw, _ := net.ParseMAC(req.MAC)
		if err := netlink.LinkSetDown(link); err != nil {
			return nil, err
		}
		if err := netlink.LinkSetHardwareAddr(link, hw); err != nil {
			return nil, fmt.Errorf("mac %s: %w", req.MAC, err)
		}
		if err := netlink.LinkSetUp(link); err != nil {
			return nil, err
		}
	}
	if req.MTU != 0 {
		if err := netlink.LinkSetMTU(link, req.MTU); err != nil {
			return nil, fmt.Errorf("mtu %d: %w", req.MTU, err)
		}
	}
	if link, err = netlink.LinkByName(ifName); err != nil {
		return nil, err
	}
	iface := sandbox.Interface{Name: ifName, MAC: link.Attrs().HardwareAddr.String(), MTU: link.Attrs().MTU}
	for _, ip := range r.IPs {
		iface.Addrs = append(iface.Addrs, ip.Address.String())
	}
	if len(iface.Addrs) == 0 {
		return nil, errors.New("the network gave the pod no address")
	}
	if req.IP != "" {
		want, _ := sandbox.ParseIP(req.IP)
		found := false
		for _, ip := range r.IPs {
			found = found || ip.Address.IP.Equal(want)
		}
		if !found {
			return nil, fmt.Errorf("ip %s requested, the network's IPAM gave %v (it must honour CNI_ARGS IP=, as host-local does, and the address must be in its range)", req.IP, iface.Addrs)
		}
	}
	out := &sandbox.Network{Interfaces: []sandbox.Interface{iface}}
	for _, rt := range r.Routes {
		gw := ""
		if rt.GW != nil {
			gw = rt.GW.String()
		} else if g := gatewayFor(r, rt.Dst.IP); g != nil {
			gw = g.String()
		}
		out.Routes = append(out.Routes, sandbox.Route{Dst: rt.Dst.String(), Gateway: gw})
	}
	if req.Gateway != "" {
		gw := net.ParseIP(req.Gateway)
		onLink := false
		for _, ip := range r.IPs {
			onLink = onLink || ip.Address.Contains(gw)
		}
		if !onLink {
			return nil, fmt.Errorf("gateway %s is not on the pod's subnet %v", req.Gateway, iface.Addrs)
		}
		dst := "0.0.0.0/0"
		if gw.To4() == nil {
			dst = "::/0"
		}
		_, dn, _ := net.ParseCIDR(dst)
		if err := netlink.RouteReplace(&netlink.Route{LinkIndex: link.Attrs().Index, Dst: dn, Gw: gw}); err != nil {
			return nil, fmt.Errorf("default route via %s: %w", req.Gateway, err)
		}
		kept := out.Routes[:0]
		for _, rt := range out.Routes {
			if rt.Dst != dst {
				kept = append(kept, rt)
			}
		}
		out.Routes = append(kept, sandbox.Route{Dst: dst, Gateway: gw.String()})
	}
	return out, nil
}

// gatewayFor is the gateway of the result's address in dst's family.
func gatewayFor(r *types100.Result, dst net.IP) net.IP {
	for _, ip := range r.IPs {
		if ip.Gateway != nil && (ip.Gateway.To4() == nil) == (dst.To4() == nil) {
			return ip.Gateway
		}
	}
	return nil
}

// Teardown releases pod podID's network: CNI DEL with the configuration
// cached at ADD (so an edited or removed conflist still frees the
// address, veth and rules), then the namespace. A pod without a network
// is fine.
func (m *Manager) Teardown(ctx context.Context, podID string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.teardownLocked(ctx, podID)
}

// teardownIf is Teardown if ok(), asked under the manager's lock (so no
// Setup of the same pod can come between the question and the teardown).
func (m *Manager) teardownIf(ctx context.Context, podID string, ok func() bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !ok() {
		return nil
	}
	return m.teardownLocked(ctx, podID)
}

func (m *Manager) teardownLocked(ctx context.Context, podID string) error {
	ns, err := m.netnsPath(podID)
	if err != nil {
		return err
	}
	var errs []error
	atts, _ := m.cni.GetCachedAttachments(podID)
	for _, a := range atts {
		list, err := libcni.NetworkConfFromBytes(a.Config)
		if err != nil {
			errs = append(errs, fmt.Errorf("network: cached configuration of %s: %w", a.Network, err))
			continue
		}
		nsPath := ns
		if !netns.Is(ns) {
			nsPath = "" // gone: plugins release what they can without it (CNI spec: DEL with no netns)
		}
		rt := &libcni.RuntimeConf{ContainerID: podID, NetNS: nsPath, IfName: a.IfName, Args: a.CniArgs, CapabilityArgs: a.CapabilityArgs}
		if err := m.cni.DelNetworkList(ctx, list, rt); err != nil {
			errs = append(errs, fmt.Errorf("network %s: %w", a.Network, err))
		}
	}
	if err := netns.Remove(ns); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Check runs CNI CHECK on pod podID's network (after a daemon restart).
func (m *Manager) Check(ctx context.Context, podID string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	ns, err := m.netnsPath(podID)
	if err != nil {
		return err
	}
	if !netns.Is(ns) {
		return fmt.Errorf("network: pod %s has no network namespace", podID)
	}
	atts, err := m.cni.GetCachedAttachments(podID)
	if err != nil || len(atts) == 0 {
		return fmt.Errorf("network: pod %s has no cached CNI result (%v)", podID, err)
	}
	for _, a := range atts {
		list, err := libcni.NetworkConfFromBytes(a.Config)
		if err != nil {
			return err
		}
		rt := &libcni.RuntimeConf{ContainerID: podID, NetNS: ns, IfName: a.IfName, Args: a.CniArgs, CapabilityArgs: a.CapabilityArgs}
		if err := m.cni.CheckNetworkList(ctx, list, rt); err != nil {
			return fmt.Errorf("network %s: %w", a.Network, err)
		}
	}
	return nil
}

// Pods lists the pods that have a network namespace or a cached CNI
// result (what a restarted daemon compares with its live pods).
func (m *Manager) Pods() []string {
	seen := map[string]bool{}
	ents, _ := os.ReadDir(filepath.Join(m.o.StateDir, "netns"))
	for _, e := range ents {
		seen[e.Name()] = true
	}
	// the cache holds results/<network>-<containerID>-<ifname>
	res, _ := os.ReadDir(filepath.Join(m.o.StateDir, "cache", "results"))
	for _, e := range res {
		var a struct {
			ContainerID string `json:"containerId"`
		}
		if b, err := os.ReadFile(filepath.Join(m.o.StateDir, "cache", "results", e.Name())); err == nil && json.Unmarshal(b, &a) == nil && a.ContainerID != "" {
			seen[a.ContainerID] = true
		}
	}
	var out []string
	for id := range seen {
		if podIDRE.MatchString(id) {
			out = append(out, id)
		}
	}
	sort.Strings(out)
	return out
}

// Counters returns the pod interface's traffic, seen from inside the
// pod's namespace (for a VM: its veth, which carries all of the guest's
// traffic).
func (m *Manager) Counters(podID, ifName string) (sandbox.NetCounters, error) {
	var c sandbox.NetCounters
	ns, err := m.netnsPath(podID)
	if err != nil {
		return c, err
	}
	err = netns.Do(ns, func() error {
		l, err := netlink.LinkByName(ifName)
		if err != nil {
			return err
		}
		s := l.Attrs().Statistics
		if s == nil {
			return fmt.Errorf("no statistics for %s", ifName)
		}
		c = sandbox.NetCounters{Name: ifName, RxBytes: s.RxBytes, RxPackets: s.RxPackets, RxErrors: s.RxErrors, RxDropped: s.RxDropped,
			TxBytes: s.TxBytes, TxPackets: s.TxPackets, TxErrors: s.TxErrors, TxDropped: s.TxDropped}
		return nil
	})
	return c, err
}
