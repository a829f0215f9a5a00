package image

import (
	"archive/tar"
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzApplyLayer: whatever names, link targets and whiteouts a layer holds, nothing
// is created or removed outside the target directory.
func FuzzApplyLayer(f *testing.F) {
	f.Add("a/b", "../../x", "c/d", "/etc", byte(2), byte(0))
	f.Add("l", "/", "l/evil", "", byte(2), byte(0))
	f.Add("l", "..", "l/.wh.outside", "", byte(2), byte(0))
	f.Add("h", "../outside", "l", "../../outside", byte(1), byte(2))
	f.Fuzz(func(t *testing.T, n1, l1, n2, l2 string, k1, k2 byte) {
		parent := t.TempDir()
		dir := filepath.Join(parent, "root")
		os.Mkdir(dir, 0o755)
		if err := os.WriteFile(filepath.Join(parent, "outside"), []byte("keep"), 0o644); err != nil {
			t.Fatal(err)
		}
		kinds := []byte{tar.TypeReg, tar.TypeLink, tar.TypeSymlink, tar.TypeDir}
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		for _, e := range []struct {
			name, link string
			k          byte
		}{{n1, l1, k1}, {n2, l2, k2}, {n2 + "/f", "", 0}} {
			typ := kinds[int(e.k)%len(kinds)]
			h := &tar.Header{Name: e.name, Linkname: e.link, Typeflag: typ, Mode: 0o755}
			if typ == tar.TypeReg {
				h.Size = 3
			}
			if tw.WriteHeader(h) != nil {
				return
			}
			if typ == tar.TypeReg {
				tw.Write([]byte("new"))
			}
		}
		tw.Close()
		ApplyLayer(dir, &buf) // errors are fine; escapes are not
		ents, _ := os.ReadDir(parent)
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		if strings.Join(names, ",") != "outside,root" {
			t.Fatalf("parent dir now holds %v", names)
		}
		if b, _ := os.ReadFile(filepath.Join(parent, "outside")); string(b) != "keep" {
			t.Fatalf("outside file changed: %q", b)
		}
	})
}
