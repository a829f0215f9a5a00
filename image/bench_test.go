package image

import (
	"archive/tar"
	"bytes"
	"context"
	"math/rand"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// BenchmarkPull pulls a 3-layer image (busybox + 2×16 MiB of incompressible data)
// from a local docker-registry into a fresh store, and times `skopeo copy` of the same
// image from the same registry to an OCI layout in the same run; it reports the
// ratio ours/skopeo (below 1 = faster than skopeo).
func BenchmarkPull(b *testing.B) {
	skopeo := mustSkopeo(b)
	reg := startRegistry(b, "", "")
	ctx := context.Background()
	s := openStore(b)
	id := loadBusybox(b, s)
	rnd := rand.New(rand.NewSource(1))
	for i := 0; i < 2; i++ {
		data := make([]byte, 16<<20)
		rnd.Read(data)
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		tw.WriteHeader(&tar.Header{Name: "data" + string(rune('0'+i)), Mode: 0o644, Size: int64(len(data)), Typeflag: tar.TypeReg})
		tw.Write(data)
		tw.Close()
		im, err := s.Commit(ctx, id, &buf, CommitOptions{})
		if err != nil {
			b.Fatal(err)
		}
		id = im.ID
	}
	remote := reg + "/bench/img:1"
	if err := s.Push(ctx, id, remote, nil, nil); err != nil {
		b.Fatal(err)
	}
	var ours, theirs time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		fresh, err := Open(filepath.Join(b.TempDir(), "s"))
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		t0 := time.Now()
		im, err := fresh.Pull(ctx, remote, nil, nil)
		ours += time.Since(t0)
		b.StopTimer()
		fresh.Close()
		if err != nil || im.ID != id {
			b.Fatalf("pull: %v (%s != %s)", err, im.ID, id)
		}
		dst := filepath.Join(b.TempDir(), "oci")
		t0 = time.Now()
		out, err := exec.Command(skopeo, "copy", "-q", "--src-tls-verify=false", "docker://"+remote, "oci:"+dst+":x").CombinedOutput()
		theirs += time.Since(t0)
		if err != nil {
			b.Fatalf("skopeo copy: %v\n%s", err, out)
		}
		b.StartTimer()
	}
	b.StopTimer()
	b.ReportMetric(float64(ours.Milliseconds())/float64(b.N), "ms/pull")
	b.ReportMetric(float64(theirs.Milliseconds())/float64(b.N), "ms/skopeo-copy")
	b.ReportMetric(float64(ours)/float64(theirs), "ratio-vs-skopeo")
}
