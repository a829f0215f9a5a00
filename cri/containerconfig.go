// This file owns turning a ContainerConfig into the core's container spec:
// image, command, environment, working dir, tty, stop signal, labels and
// the CRI metadata, log path, and the security context fields the agent
// honours (refusing those it cannot).

package cri

import (
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hyperhq/hyperd-go/pod"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// The agent's fixed confinement (agent/harden.go): these /proc and /sys
// paths are masked or read-only in every container. The kubelet's default
// lists are the same paths; a request for any other path is refused.
var (
	agentMaskedPaths = []string{"/proc/asound", "/proc/acpi", "/proc/interrupts", "/proc/kcore", "/proc/keys",
		"/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug",
		"/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap"}
	agentReadOnlyPaths = []string{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"}
)

var ctrNameRe = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`)

// containerName is the core's (unique) name of a CRI container: the
// kubelet's docker-style k8s_<container>_<pod>_<namespace>_<uid>_<attempt>,
// or the id when that is not a valid core name.
func containerName(id string, md *runtimeapi.ContainerMetadata, sb *sandbox) string {
	n := "k8s_" + md.Name + "_" + sb.meta.Name + "_" + sb.meta.Namespace + "_" + sb.meta.UID + "_" + strconv.Itoa(int(md.Attempt))
	if len(n) > 200 || !ctrNameRe.MatchString(n) {
		return id
	}
	return n
}

// volumeName is the pod volume of a CRI container's mount i.
func volumeName(cid string, i int) string { return "cri-" + cid[:16] + "-" + strconv.Itoa(i) }

// mounts maps a container's CRI mounts onto pod volumes (host directories)
// and the container's references to them. selinux_relabel is a no-op, as
// with containerd on a host without SELinux: sandboxes have none.
func mounts(id string, ms []*runtimeapi.Mount) ([]pod.VolumeSpec, []pod.VolumeRef, []mountMeta, error) {
	var vols []pod.VolumeSpec
	var refs []pod.VolumeRef
	var meta []mountMeta
	seen := map[string]bool{}
	for i, m := range ms {
		what := fmt.Sprintf("container config: mount %d (%s)", i, m.ContainerPath)
		switch {
		case !filepath.IsAbs(m.ContainerPath):
			return nil, nil, nil, invalid("%s: container_path must be absolute", what)
		case seen[filepath.Clean(m.ContainerPath)]:
			return nil, nil, nil, invalid("%s: container_path used twice", what)
		case m.Image != nil && m.Image.Image != "":
			return nil, nil, nil, invalid("%s: image volumes are not supported", what)
		case !filepath.IsAbs(m.HostPath):
			return nil, nil, nil, invalid("%s: host_path %q must be absolute", what, m.HostPath)
		case m.Propagation != runtimeapi.MountPropagation_PROPAGATION_PRIVATE:
			return nil, nil, nil, invalid("%s: propagation %s is not supported: a sandbox's mounts are private", what, m.Propagation)
		case len(m.UidMappings) > 0 || len(m.GidMappings) > 0:
			return nil, nil, nil, invalid("%s: id-mapped mounts are not supported", what)
		case m.RecursiveReadOnly:
			return nil, nil, nil, invalid("%s: recursive read-only mounts are not supported", what)
		case len(m.MountOptions) > 0:
			return nil, nil, nil, invalid("%s: mount options are not supported", what)
		}
		seen[filepath.Clean(m.ContainerPath)] = true
		n := volumeName(id, i)
		vols = append(vols, pod.VolumeSpec{Name: n, Source: m.HostPath, Format: "vfs"})
		refs = append(refs, pod.VolumeRef{Volume: n, Path: m.ContainerPath, ReadOnly: m.Readonly})
		meta = append(meta, mountMeta{ContainerPath: m.ContainerPath, HostPath: m.HostPath, Readonly: m.Readonly})
	}
	return vols, refs, meta, nil
}

// containerSpec builds the core's spec of a new container id in sb, and
// the pod volumes its mounts need.
func (s *Server) containerSpec(id string, cfg *runtimeapi.ContainerConfig, sb *sandbox) (*pod.ContainerSpec, []pod.VolumeSpec, error) {
	md := cfg.GetMetadata()
	if md == nil || md.Name == "" {
		return nil, nil, invalid("container config: metadata.name is required")
	}
	img := cfg.GetImage().GetImage()
	if img == "" {
		return nil, nil, invalid("container config: image.image is required")
	}
	if err := checkLabels("container", cfg.Labels); err != nil {
		return nil, nil, err
	}
	if len(cfg.Devices) > 0 || len(cfg.CDIDevices) > 0 {
		return nil, nil, invalid("container config: devices are not supported by hyperd's sandboxes")
	}
	if cfg.GetWindows() != nil {
		return nil, nil, invalid("container config: windows settings on a Linux runtime")
	}
	meta := containerMeta{Name: md.Name, Attempt: md.Attempt, Annotations: cfg.Annotations, Image: img,
		UserImage: cfg.GetImage().GetUserSpecifiedImage(), CreatedAt: time.Now().UnixNano(),
		Stdin: cfg.Stdin, StdinOnce: cfg.StdinOnce, Tty: cfg.Tty}
	if cfg.LogPath != "" {
		if sb.meta.LogDirectory == "" && !filepath.IsAbs(cfg.LogPath) {
			return nil, nil, invalid("container config: log_path %q is relative and the sandbox has no log_directory", cfg.LogPath)
		}
		meta.LogPath = filepath.Join(sb.meta.LogDirectory, cfg.LogPath)
	}
	spec := &pod.ContainerSpec{ID: id, Name: containerName(id, md, sb), Image: img, Workdir: cfg.WorkingDir,
		RestartPolicy: pod.RestartNever, Tty: cfg.Tty, Entrypoint: cfg.Command, Command: cfg.Args}
	if len(cfg.Command) == 0 && len(cfg.Args) > 0 {
		spec.Entrypoint, spec.Command = nil, cfg.Args
	}
	for _, kv := range cfg.Envs {
		replaced := false
		for i := range spec.Envs {
			if spec.Envs[i].Env == kv.Key {
				spec.Envs[i].Value, replaced = string(kv.Value), true // the last one wins, as with runc
			}
		}
		if !replaced {
			spec.Envs = append(spec.Envs, pod.EnvVar{Env: kv.Key, Value: string(kv.Value)})
		}
	}
	if cfg.StopSignal != runtimeapi.Signal_SIGNAL_RUNTIME_DEFAULT {
		spec.StopSignal = cfg.StopSignal.String()
	}
	if err := applySecurity(spec, cfg.GetLinux().GetSecurityContext()); err != nil {
		return nil, nil, err
	}
	vols, refs, mm, err := mounts(id, cfg.Mounts)
	if err != nil {
		return nil, nil, err
	}
	if len(vols) > 0 && s.core.DriverName() == "kvm" {
		// a pod VM shares no host path (no virtio-fs/9p): a directory is
		// refused by the core, and a file would be given to the guest as a
		// raw disk (a block device where the file should be)
		return nil, nil, status.Errorf(codes.Unimplemented, "container config: mount 0 (%s): with --driver kvm a host path cannot be shared into the pod VM (no virtio-fs/9p); kvm volumes are disk images", cfg.Mounts[0].ContainerPath)
	}
	spec.Volumes, meta.Mounts = refs, mm
	spec.Labels = withMeta(cfg.Labels, LabelContainer, meta)
	return spec, vols, nil
}

// applySecurity maps the container security context onto spec.
func applySecurity(spec *pod.ContainerSpec, sc *runtimeapi.LinuxContainerSecurityContext) error {
	if sc == nil {
		return nil
	}
	const what = "container security context"
	if sc.Privileged {
		return invalid("%s: privileged is not supported by hyperd's sandboxes", what)
	}
	if c := sc.Capabilities; c != nil && (len(c.AddCapabilities) > 0 || len(c.DropCapabilities) > 0 || len(c.AddAmbientCapabilities) > 0) {
		return invalid("%s: capabilities (add/drop) are not supported: the agent gives every container Docker's default set", what)
	}
	if sc.SelinuxOptions != nil {
		return invalid("%s: selinux_options are not supported", what)
	}
	if err := checkContainerProfile(what, "seccomp", sc.Seccomp, sc.SeccompProfilePath); err != nil {
		return err
	}
	if err := checkContainerProfile(what, "apparmor", sc.Apparmor, sc.ApparmorProfile); err != nil {
		return err
	}
	if err := checkNamespaces("container", sc.NamespaceOptions); err != nil {
		return err
	}
	for _, p := range sc.MaskedPaths {
		if !slices.Contains(agentMaskedPaths, p) {
			return invalid("%s: masked path %s is not supported: the agent masks its fixed list (%s)", what, p, strings.Join(agentMaskedPaths, " "))
		}
	}
	for _, p := range sc.ReadonlyPaths {
		if !slices.Contains(agentReadOnlyPaths, p) {
			return invalid("%s: read-only path %s is not supported: the agent's fixed list is %s", what, p, strings.Join(agentReadOnlyPaths, " "))
		}
	}
	if len(sc.SupplementalGroups) > 0 {
		return invalid("%s: supplemental_groups are not supported by the agent yet", what)
	}
	if sc.SupplementalGroupsPolicy != runtimeapi.SupplementalGroupsPolicy_Merge {
		return invalid("%s: supplemental_groups_policy %s is not supported", what, sc.SupplementalGroupsPolicy)
	}
	spec.ReadOnly = sc.ReadonlyRootfs
	switch {
	case sc.RunAsUser != nil && sc.RunAsUsername != "":
		return invalid("%s: run_as_user and run_as_username are both set", what)
	case sc.RunAsUser != nil:
		if sc.RunAsUser.Value < 0 {
			return invalid("%s: run_as_user %d is negative", what, sc.RunAsUser.Value)
		}
		spec.User.Name = strconv.FormatInt(sc.RunAsUser.Value, 10)
	case sc.RunAsUsername != "":
		spec.User.Name = sc.RunAsUsername
	}
	if sc.RunAsGroup != nil {
		if sc.RunAsGroup.Value < 0 {
			return invalid("%s: run_as_group %d is negative", what, sc.RunAsGroup.Value)
		}
		if spec.User.Name == "" {
			return invalid("%s: run_as_group is set without run_as_user or run_as_username", what)
		}
		spec.User.Group = strconv.FormatInt(sc.RunAsGroup.Value, 10)
	}
	return nil
}

// checkContainerProfile accepts an unset, Unconfined or RuntimeDefault
// profile. RuntimeDefault is what every container gets: the agent's
// seccomp filter is Docker's default (containerd's RuntimeDefault is the
// same profile), and no AppArmor is enabled in a sandbox (as containerd on
// a host without AppArmor). Unconfined still gets the agent's filter
// (stricter than asked). A Localhost profile is refused.
func checkContainerProfile(what, field string, p *runtimeapi.SecurityProfile, path string) error {
	switch path {
	case "", "unconfined", "runtime/default", "docker/default":
	default:
		return invalid("%s: %s profile %q is not supported: the agent applies its fixed default confinement only", what, field, path)
	}
	if p != nil && p.ProfileType == runtimeapi.SecurityProfile_Localhost {
		return invalid("%s: %s Localhost profile %q is not supported: the agent applies its fixed default confinement only", what, field, p.LocalhostRef)
	}
	return nil
}
