package image

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// A manifest list (OCI index) is resolved to its linux/amd64 image.
func TestPullManifestList(t *testing.T) {
	reg := startRegistry(t, "", "")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s := openStore(t)
	loadBusybox(t, s, "busybox")
	amd, err := s.getRec("busybox")
	if err != nil {
		t.Fatal(err)
	}
	amdImg, err := s.v1Image(amd)
	if err != nil {
		t.Fatal(err)
	}
	arm, err := random.Image(1024, 1)
	if err != nil {
		t.Fatal(err)
	}
	idx := mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: arm, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}}},
		mutate.IndexAddendum{Add: amdImg, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}},
	)
	ref, err := name.ParseReference(reg+"/multi/bb:1", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(ref, idx, remote.WithContext(ctx)); err != nil {
		t.Fatal(err)
	}
	idxDigest, _ := idx.Digest()
	s2 := openStore(t)
	// Concurrent pulls of the same reference agree and leave one image.
	var wg sync.WaitGroup
	ids := make([]string, 4)
	errs := make([]error, 4)
	for i := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			im, err := s2.Pull(ctx, reg+"/multi/bb:1", nil, nil)
			ids[i], errs[i] = im.ID, err
		}()
	}
	wg.Wait()
	for i := range ids {
		if errs[i] != nil || ids[i] != amd.ID {
			t.Errorf("pull %d = %s, %v; want the amd64 image %s", i, ids[i], errs[i], amd.ID)
		}
	}
	im, _ := s2.Get(amd.ID)
	if len(im.RepoDigests) != 1 || im.RepoDigests[0] != reg+"/multi/bb@"+idxDigest.String() {
		t.Errorf("RepoDigests = %v, want the index digest %s", im.RepoDigests, idxDigest)
	}
	if l, _ := s2.List(true); len(l) != 1 {
		t.Errorf("%d images after concurrent pulls", len(l))
	}
	// And the digest reference works for Get.
	if _, err := s2.Get(reg + "/multi/bb@" + idxDigest.String()); err != nil {
		t.Error(err)
	}
	// Concurrent RootfsDir/DiskImage calls build once and agree.
	dirs := make([]string, 4)
	for i := range dirs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			dirs[i], errs[i] = s2.RootfsDir(ctx, amd.ID)
		}()
	}
	wg.Wait()
	for i := range dirs {
		if errs[i] != nil || dirs[i] != dirs[0] {
			t.Errorf("RootfsDir %d = %s, %v", i, dirs[i], errs[i])
		}
	}
}
