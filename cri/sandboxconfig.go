// This file owns turning a PodSandboxConfig into the core's pod spec:
// hostname, DNS, port mappings, labels and the CRI metadata, and the
// checks of what a sandbox cannot honour (namespace modes, sysctls,
// security context fields).

package cri

import (
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/hyperhq/hyperd-go/pod"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// podSpec builds the pod spec of a new sandbox id from cfg.
func (s *Server) podSpec(id string, cfg *runtimeapi.PodSandboxConfig, handler string) (*pod.PodSpec, error) {
	md := cfg.GetMetadata()
	if md == nil || md.Name == "" {
		return nil, invalid("sandbox config: metadata.name is required")
	}
	if md.Namespace == "" || md.Uid == "" {
		return nil, invalid("sandbox config: metadata.namespace and metadata.uid are required")
	}
	if err := checkLabels("sandbox", cfg.Labels); err != nil {
		return nil, err
	}
	var size pod.Resource // zero: hyperd's defaults
	meta := sandboxMeta{Name: md.Name, UID: md.Uid, Namespace: md.Namespace, Attempt: md.Attempt,
		Annotations: cfg.Annotations, LogDirectory: cfg.LogDirectory, RuntimeHandler: handler, CreatedAt: time.Now().UnixNano()}
	if lx := cfg.GetLinux(); lx != nil {
		meta.CgroupParent = lx.CgroupParent
		if len(lx.Sysctls) > 0 {
			return nil, invalid("sandbox config: linux.sysctls are not supported by hyperd's sandboxes (a pod's kernel is its own VM's with --driver kvm); got %d", len(lx.Sysctls))
		}
		if err := checkSandboxSecurity(lx.SecurityContext); err != nil {
			return nil, err
		}
		vcpu, mib, err := s.sandboxSize(lx)
		if err != nil {
			return nil, err
		}
		size = pod.Resource{VCPU: vcpu, Memory: mib}
		if ns := lx.GetSecurityContext().GetNamespaceOptions(); ns != nil {
			meta.NetworkMode, meta.PidMode, meta.IpcMode = int32(ns.Network), int32(ns.Pid), int32(ns.Ipc)
		}
	}
	if cfg.GetWindows() != nil {
		return nil, invalid("sandbox config: windows settings on a Linux runtime")
	}
	spec := &pod.PodSpec{ID: id, Hostname: cfg.Hostname, Type: pod.PodTypeSandbox, RestartPolicy: pod.RestartNever,
		Labels: withMeta(cfg.Labels, LabelSandbox, meta), Resource: size}
	if d := cfg.GetDnsConfig(); d != nil {
		spec.DNS, spec.DNSSearch, spec.DNSOptions = d.Servers, d.Searches, d.Options
	}
	for _, pm := range cfg.PortMappings {
		m, ok, err := portMapping(pm)
		if err != nil {
			return nil, err
		}
		if ok {
			spec.PortMappings = append(spec.PortMappings, m)
		}
	}
	return spec, nil
}

// sandboxSize sizes the sandbox (a VM with the kvm driver, the cgroup
// limits with local) as Kata does: hyperd's base size (--vcpu, --memory:
// the guest's own kernel and agent) plus the sum of the containers' limits
// the kubelet gives (resources) and the pod's overhead. No limits: zero,
// hyperd's defaults.
func (s *Server) sandboxSize(lx *runtimeapi.LinuxPodSandboxConfig) (vcpu, mib int, err error) {
	var cores float64
	var mem int64
	for _, r := range []*runtimeapi.LinuxContainerResources{lx.Resources, lx.Overhead} {
		if r == nil {
			continue
		}
		if r.CpuQuota > 0 && r.CpuPeriod > 0 {
			cores += float64(r.CpuQuota) / float64(r.CpuPeriod)
		}
		if r.MemoryLimitInBytes > 0 {
			mem += r.MemoryLimitInBytes
		}
	}
	if cores == 0 && mem == 0 {
		return 0, 0, nil
	}
	vcpu, mib = max(s.cfg.BaseVCPU, 1), max(s.cfg.BaseMemoryMiB, 16)
	if cores > 0 {
		vcpu += int(math.Ceil(cores - 1e-9))
	}
	mib += int((mem + 1<<20 - 1) >> 20)
	if vcpu > 64 {
		return 0, 0, invalid("sandbox config: %d vCPUs (hyperd's %d and the containers' limits %.2f) exceed 64", vcpu, s.cfg.BaseVCPU, cores)
	}
	if mib > 1<<20 {
		return 0, 0, invalid("sandbox config: %d MiB of memory is out of range", mib)
	}
	return vcpu, mib, nil
}

// portMapping maps a CRI port mapping; ok is false for one without a host
// port (nothing to listen on: the port is reached at the pod's address).
func portMapping(pm *runtimeapi.PortMapping) (pod.PortMapping, bool, error) {
	var proto string
	switch pm.Protocol {
	case runtimeapi.Protocol_TCP:
		proto = "tcp"
	case runtimeapi.Protocol_UDP:
		proto = "udp"
	default:
		return pod.PortMapping{}, false, invalid("port mapping: protocol %s is not supported (TCP, UDP)", pm.Protocol)
	}
	switch pm.HostIp {
	case "", "0.0.0.0", "::":
	default:
		return pod.PortMapping{}, false, invalid("port mapping: host_ip %q is not supported: hyperd listens on all host addresses", pm.HostIp)
	}
	if pm.ContainerPort < 1 || pm.ContainerPort > 65535 {
		return pod.PortMapping{}, false, invalid("port mapping: container_port %d out of range 1-65535", pm.ContainerPort)
	}
	if pm.HostPort == 0 {
		return pod.PortMapping{}, false, nil
	}
	if pm.HostPort < 0 || pm.HostPort > 65535 {
		return pod.PortMapping{}, false, invalid("port mapping: host_port %d out of range 1-65535", pm.HostPort)
	}
	return pod.PortMapping{ContainerPort: pod.PortString(strconv.Itoa(int(pm.ContainerPort))),
		HostPort: pod.PortString(strconv.Itoa(int(pm.HostPort))), Protocol: proto}, true, nil
}

// checkNamespaces refuses the namespace modes a sandbox cannot honour.
func checkNamespaces(what string, ns *runtimeapi.NamespaceOption) error {
	if ns == nil {
		return nil
	}
	if ns.Network == runtimeapi.NamespaceMode_NODE {
		return invalid("%s: namespace_options.network NODE (host network) is not supported: a pod's sandbox has its own network", what)
	}
	switch ns.Pid {
	case runtimeapi.NamespaceMode_NODE:
		return invalid("%s: namespace_options.pid NODE (host PID namespace) is not supported by hyperd's sandboxes", what)
	case runtimeapi.NamespaceMode_TARGET:
		return invalid("%s: namespace_options.pid TARGET is not supported: every container has its own PID namespace", what)
	case runtimeapi.NamespaceMode_POD:
		// the kubelet's shareProcessNamespace (CONTAINER otherwise)
		return invalid("%s: namespace_options.pid POD (a PID namespace shared by the pod, shareProcessNamespace) is not supported: every container has its own PID namespace", what)
	}
	if ns.Ipc == runtimeapi.NamespaceMode_NODE {
		return invalid("%s: namespace_options.ipc NODE (host IPC namespace) is not supported by hyperd's sandboxes", what)
	}
	if ns.UsernsOptions != nil && ns.UsernsOptions.Mode == runtimeapi.NamespaceMode_POD {
		return invalid("%s: namespace_options.userns_options POD (Kubernetes user namespaces) is not supported", what)
	}
	return nil
}

func checkSandboxSecurity(sc *runtimeapi.LinuxSandboxSecurityContext) error {
	if sc == nil {
		return nil
	}
	const what = "sandbox security context"
	if sc.Privileged {
		return invalid("%s: privileged is not supported by hyperd's sandboxes", what)
	}
	if sc.SelinuxOptions != nil {
		return invalid("%s: selinux_options are not supported", what)
	}
	if err := checkContainerProfile(what, "seccomp", sc.Seccomp, sc.SeccompProfilePath); err != nil {
		return err
	}
	if err := checkContainerProfile(what, "apparmor", sc.Apparmor, ""); err != nil {
		return err
	}
	return checkNamespaces("sandbox", sc.NamespaceOptions)
}

// handlerOK: the runtime handler is the default ("") or the driver's name.
func (s *Server) handlerOK(h string) error {
	if h == "" || h == s.core.DriverName() {
		return nil
	}
	return invalid("runtime handler %q is not known: this hyperd runs its pods with the %s driver (handler \"\" or %q)", h, s.core.DriverName(), s.core.DriverName())
}

func fmtMeta(m *runtimeapi.PodSandboxMetadata) string {
	return fmt.Sprintf("%s/%s (uid %s, attempt %d)", m.Namespace, m.Name, m.Uid, m.Attempt)
}
