package cri_test

// Tests of the server's configuration: a driver that cannot run CRI
// containers (RuntimeReady false), the sandbox's size, and the kvm
// driver's refusal of host path mounts.

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hyperhq/hyperd-go/cri"
	"github.com/hyperhq/hyperd-go/pod"
	"github.com/hyperhq/hyperd-go/pod/podtest"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestNotReady: a driver that cannot run CRI containers makes RuntimeReady
// false, saying why.
func TestNotReady(t *testing.T) {
	root := filepath.Join(t.TempDir(), "root")
	d, err := pod.New(pod.Config{DataRoot: root, Driver: podtest.NewDriver(), Images: &podtest.Images{Root: t.TempDir()}, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	srv := cri.New(cri.Config{Core: d, Images: nil, Log: quiet(), NotReady: "no disk hotplug"})
	defer srv.Close()
	st, err := srv.Status(context.Background(), &runtimeapi.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	c := st.Status.Conditions[0]
	if c.Type != runtimeapi.RuntimeReady || c.Status || c.Reason != "SandboxDriverNotReady" || c.Message != "no disk hotplug" {
		t.Errorf("RuntimeReady = %v", c)
	}
}

// TestSandboxSize: a sandbox is hyperd's base size plus its containers'
// limits and overhead (as Kata sizes its VMs); without limits, the defaults.
func TestSandboxSize(t *testing.T) {
	root := filepath.Join(t.TempDir(), "root")
	d, err := pod.New(pod.Config{DataRoot: root, Driver: podtest.NewDriver(), Images: &podtest.Images{Root: t.TempDir()}, Logger: quiet(),
		DefaultVCPU: 1, DefaultMemory: 128})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	srv := cri.New(cri.Config{Core: d, Log: quiet(), BaseVCPU: 1, BaseMemoryMiB: 128})
	defer srv.Close()
	ctx := context.Background()
	for i, tc := range []struct {
		res, overhead *runtimeapi.LinuxContainerResources
		vcpu, mib     int
		code          codes.Code
	}{
		{nil, nil, 1, 128, codes.OK},
		{&runtimeapi.LinuxContainerResources{CpuPeriod: 100000, CpuQuota: 150000, MemoryLimitInBytes: 256 << 20}, nil, 3, 384, codes.OK},
		{&runtimeapi.LinuxContainerResources{CpuPeriod: 100000, CpuQuota: 100000}, &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: 1}, 2, 129, codes.OK},
		{&runtimeapi.LinuxContainerResources{CpuShares: 1024}, nil, 1, 128, codes.OK}, // shares are no limit
		{&runtimeapi.LinuxContainerResources{CpuPeriod: 1000, CpuQuota: 100000}, nil, 0, 0, codes.InvalidArgument},
	} {
		cfg := &runtimeapi.PodSandboxConfig{Metadata: &runtimeapi.PodSandboxMetadata{Name: fmt.Sprint("s", i), Namespace: "ns", Uid: fmt.Sprint("u", i)},
			Linux: &runtimeapi.LinuxPodSandboxConfig{Resources: tc.res, Overhead: tc.overhead}}
		r, err := srv.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: cfg})
		if status.Code(err) != tc.code {
			t.Errorf("case %d: %v, want %s", i, err, tc.code)
			continue
		}
		if err != nil {
			continue
		}
		pi, _ := d.PodInfo(r.PodSandboxId)
		if pi.Spec.Vcpu != tc.vcpu || pi.Spec.Memory != tc.mib {
			t.Errorf("case %d: sandbox of %d vCPU, %d MiB, want %d, %d", i, pi.Spec.Vcpu, pi.Spec.Memory, tc.vcpu, tc.mib)
		}
	}
}

// kvmCore is the core as a hyperd --driver kvm shows it to the server.
type kvmCore struct{ *pod.Daemon }

func (kvmCore) DriverName() string { return "kvm" }

// TestKVMMounts: with --driver kvm a container with host path mounts is
// refused with Unimplemented (a pod VM shares no host path), and one
// without mounts is created.
func TestKVMMounts(t *testing.T) {
	root := filepath.Join(t.TempDir(), "root")
	d, err := pod.New(pod.Config{DataRoot: root, Driver: podtest.NewDriver(), Images: &podtest.Images{Root: t.TempDir()}, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	srv := cri.New(cri.Config{Core: kvmCore{d}, Log: quiet()})
	defer srv.Close()
	ctx := context.Background()
	sbCfg := &runtimeapi.PodSandboxConfig{Metadata: &runtimeapi.PodSandboxMetadata{Name: "k", Namespace: "ns", Uid: "u"}}
	sb, err := srv.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: sbCfg})
	if err != nil {
		t.Fatal(err)
	}
	hostFile := filepath.Join(t.TempDir(), "hosts")
	for _, tc := range []struct {
		name   string
		mounts []*runtimeapi.Mount
		code   codes.Code
	}{
		{"no mounts", nil, codes.OK},
		{"a host file", []*runtimeapi.Mount{{ContainerPath: "/etc/hosts", HostPath: hostFile}}, codes.Unimplemented},
		{"a host directory", []*runtimeapi.Mount{{ContainerPath: "/data", HostPath: t.TempDir()}}, codes.Unimplemented},
		{"a bad mount first", []*runtimeapi.Mount{{ContainerPath: "data", HostPath: "/tmp"}}, codes.InvalidArgument},
	} {
		cfg := &runtimeapi.ContainerConfig{Metadata: &runtimeapi.ContainerMetadata{Name: strings.ReplaceAll(tc.name, " ", "-")},
			Image: &runtimeapi.ImageSpec{Image: "sleeper"}, Mounts: tc.mounts}
		_, err := srv.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: sb.PodSandboxId, Config: cfg, SandboxConfig: sbCfg})
		if status.Code(err) != tc.code {
			t.Errorf("%s: %v, want %s", tc.name, err, tc.code)
		}
	}
}
