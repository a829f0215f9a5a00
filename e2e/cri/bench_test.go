package cri

// BenchmarkCRIOverhead (make bench): the same pod life cycle through the
// CRI and through the REST API of one hyperd, so the ratio is the CRI
// layer's cost, with the driver of $HYPERD_E2E_DRIVER (local in make
// bench's host run; kvm in its nested run, scripts/bench-nested.sh, where
// a CRI container's image is hot-added to the running pod VM while the
// REST pod's VM boots with it): a sandbox with one container running,
// then stopped and removed. REST: create (with the container), start,
// remove; CRI: RunPodSandbox, CreateContainer, StartContainer,
// StopPodSandbox, RemovePodSandbox. The container's shell exits on the
// stop signal, so no stop timeout is waited for.

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/hyperhq/hyperd-go/api/client"
	"github.com/hyperhq/hyperd-go/e2e/imgtest"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

var benchCmd = []string{"sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"}

func BenchmarkCRIOverhead(b *testing.B) {
	requireRoot(b)
	driver := suiteDriver()
	h := startHyperd(b, driver)
	c, err := client.New("unix://" + h.sock)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	bb, err := imgtest.BusyboxPath()
	if err != nil {
		b.Fatal(err)
	}
	var arch bytes.Buffer
	if err := imgtest.Write(&arch, bb, "busybox:latest"); err != nil {
		b.Fatal(err)
	}
	if _, err := c.Load(ctx, &arch); err != nil {
		b.Fatal(err)
	}
	res := map[string]float64{}
	b.Run("rest", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			id := fmt.Sprintf("bench-rest-%d-%d", b.N, i)
			spec := fmt.Sprintf(`{"id":%q,"containers":[{"name":%q,"image":"busybox:latest","command":["sh","-c","trap 'exit 0' TERM; sleep 3600 & wait"]}]}`, id, id)
			if _, err := c.CreatePod(ctx, []byte(spec)); err != nil {
				b.Fatal(err)
			}
			if err := c.StartPod(ctx, id); err != nil {
				b.Fatalf("start: %v\n%s", err, h.log())
			}
			if err := c.RemovePod(ctx, id); err != nil {
				b.Fatal(err)
			}
		}
		res["rest"] = float64(b.Elapsed().Milliseconds()) / float64(b.N)
		b.ReportMetric(res["rest"], "ms/lifecycle")
	})
	b.Run("cri", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			name := fmt.Sprintf("bench-cri-%d-%d", b.N, i)
			sbCfg := &runtimeapi.PodSandboxConfig{Metadata: &runtimeapi.PodSandboxMetadata{Name: name, Namespace: "bench", Uid: name}}
			sb, err := h.rc.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: sbCfg})
			if err != nil {
				b.Fatal(err)
			}
			cr, err := h.rc.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: sb.PodSandboxId, SandboxConfig: sbCfg,
				Config: &runtimeapi.ContainerConfig{Metadata: &runtimeapi.ContainerMetadata{Name: "c"}, Image: &runtimeapi.ImageSpec{Image: "busybox:latest"}, Command: benchCmd}})
			if err != nil {
				b.Fatal(err)
			}
			if _, err := h.rc.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: cr.ContainerId}); err != nil {
				b.Fatalf("start: %v\n%s", err, h.log())
			}
			if _, err := h.rc.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: sb.PodSandboxId}); err != nil {
				b.Fatal(err)
			}
			if _, err := h.rc.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: sb.PodSandboxId}); err != nil {
				b.Fatal(err)
			}
		}
		res["cri"] = float64(b.Elapsed().Milliseconds()) / float64(b.N)
		b.ReportMetric(res["cri"], "ms/lifecycle")
	})
	if res["rest"] > 0 && res["cri"] > 0 {
		fmt.Printf("pod life cycle, hyperd --driver %s: CRI %.1f ms, REST %.1f ms, ratio CRI/REST %.2f (%s)\n", driver, res["cri"], res["rest"], res["cri"]/res["rest"], time.Now().UTC().Format("2006-01-02"))
	}
}
