package image

// FuzzLoad: /image/load on a hostile archive. Whatever the tar holds
// (names with "..", absolute names, symlinks out of the extraction root,
// manifests and configs naming paths outside it, OCI layouts), Load must
// not panic, must write nothing outside the store root, must leave no
// extraction directory behind, and must not touch the host files around
// the store.
//
//	go test -fuzz=FuzzLoad -fuzztime=30s ./image

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// fuzzLoadMaxBytes bounds what one input may extract (the declared sizes
// of its members), so a compressed or sparse input cannot fill the disk of
// the machine that fuzzes: Load itself has no such bound (see the report
// of the fuzz run).
const fuzzLoadMaxBytes = 8 << 20

// fuzzLoadBounded reports whether data, decompressed, is a tar stream
// whose members declare at most fuzzLoadMaxBytes in all. Inputs it cannot
// read fully are fine: Load stops at the same error.
func fuzzLoadBounded(data []byte) bool {
	r, err := decompress(bytes.NewReader(data))
	if err != nil {
		return true
	}
	defer r.Close()
	tr := tar.NewReader(io.LimitReader(r, fuzzLoadMaxBytes+1<<20))
	var total int64
	for {
		h, err := tr.Next()
		if err != nil {
			return true
		}
		if h.Size < 0 || h.Size > fuzzLoadMaxBytes {
			return false
		}
		if total += h.Size; total > fuzzLoadMaxBytes {
			return false
		}
	}
}

// listTree lists every path under dir with its type and size, except the
// subtrees named in skip (relative to dir).
func listTree(dir string, skip ...string) ([]string, error) {
	var out []string
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if slices.Contains(skip, rel) {
			return filepath.SkipDir
		}
		size := fi.Size()
		if fi.IsDir() {
			size = 0
		}
		out = append(out, fmt.Sprintf("%s %v %d", rel, fi.Mode(), size))
		return nil
	})
	return out, err
}

func FuzzLoad(f *testing.F) {
	es := func(list ...entry) []byte { return tarOf(f, list) }
	manifest := func(cfg string, layers ...string) entry {
		b := `[{"Config":"` + cfg + `","RepoTags":["x:latest"],"Layers":[` + strings.Join(quoteAll(layers), ",") + `]}]`
		return entry{name: "manifest.json", body: b}
	}
	layer := tarOf(f, []entry{{name: "etc/", typ: tar.TypeDir}, {name: "etc/hostname", body: "fuzz\n"},
		{name: "bin/sh", typ: tar.TypeSymlink, link: "busybox"}, {name: "../../escape", body: "x"}})
	good, _ := dockerArchive(f, []string{"fuzz:latest"}, []string{"/bin/sh"}, layer)
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(good)
	zw.Close()
	for _, seed := range [][]byte{
		good,
		gz.Bytes(),
		es(entry{name: "../../../outside", body: "pwned"}, entry{name: "/abs/outside", body: "pwned"}),
		es(entry{name: "l", typ: tar.TypeSymlink, link: "../../.."}, entry{name: "l/outside", body: "pwned"}),
		es(entry{name: "manifest.json", typ: tar.TypeSymlink, link: "../../../outside"}),
		es(manifest("../../../outside"), entry{name: "../../../victim/x", body: "pwned"}),
		es(manifest("c.json", "../../../outside"), entry{name: "c.json", body: `{"rootfs":{"type":"layers","diff_ids":["sha256:0000000000000000000000000000000000000000000000000000000000000000"]}}`}),
		es(manifest("c.json", "l/layer.tar"), entry{name: "l", typ: tar.TypeSymlink, link: "/"},
			entry{name: "c.json", body: `{"rootfs":{"type":"layers","diff_ids":[]}}`}),
		es(entry{name: "index.json", body: `{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","size":2}]}`},
			entry{name: "oci-layout", body: `{"imageLayoutVersion":"1.0.0"}`}),
		es(entry{name: "index.json", body: `{}`}, entry{name: "blobs/sha256/x", typ: tar.TypeSymlink, link: "../../../../outside"}),
		es(entry{name: "a", typ: tar.TypeLink, link: "../../../outside"}, entry{name: "d/", typ: tar.TypeDir}, entry{name: "d/../../x", body: "x"}),
		{},
		[]byte("not a tar at all"),
	} {
		f.Add(seed)
	}

	parent := f.TempDir()
	root := filepath.Join(parent, "image")
	s, err := Open(root)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { s.Close() })
	if err := os.WriteFile(filepath.Join(parent, "outside"), []byte("keep"), 0o644); err != nil {
		f.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(parent, "victim"), 0o755); err != nil {
		f.Fatal(err)
	}
	// The harness's store works: the well-formed seed loads.
	if _, err := s.Load(context.Background(), bytes.NewReader(good)); err != nil {
		f.Fatalf("loading a well-formed archive: %v", err)
	}
	// Around the store: nothing may change. In the store: only the blob,
	// rootfs and disk directories and the database may.
	around, err := listTree(parent, "image")
	if err != nil {
		f.Fatal(err)
	}
	storeTop := func() []string {
		ents, _ := os.ReadDir(root)
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		return names
	}
	top := storeTop()

	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 1<<20 || !fuzzLoadBounded(data) {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		done := make(chan struct{})
		go func() {
			defer close(done)
			s.Load(ctx, bytes.NewReader(data)) // errors are fine; escapes are not
		}()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Fatal("Load hung")
		}
		if got, err := listTree(parent, "image"); err != nil || !slices.Equal(got, around) {
			t.Fatalf("Load changed the files around the store:\n%v\nwas\n%v", got, around)
		}
		if b, _ := os.ReadFile(filepath.Join(parent, "outside")); string(b) != "keep" {
			t.Fatalf("outside file now %q", b)
		}
		if got := storeTop(); !slices.Equal(got, top) {
			t.Fatalf("store root now holds %v, was %v", got, top)
		}
		if left, _ := os.ReadDir(s.tmpDir()); len(left) != 0 {
			t.Fatalf("Load left %d entries in %s", len(left), s.tmpDir())
		}
	})
}

func quoteAll(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = `"` + s + `"`
	}
	return out
}
