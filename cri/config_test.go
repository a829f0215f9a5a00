package cri_test

// Tests of the server's configuration: a driver that cannot run CRI
// containers (RuntimeReady false) and the sandbox's size.

import (
	"context"
	"fmt"
	"path/filepath"
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
