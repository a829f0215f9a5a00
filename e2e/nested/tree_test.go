package nested

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/u-root/u-root/pkg/cpio"
)

func TestParseLdd(t *testing.T) {
	for _, c := range []struct {
		name, out string
		want      []string
		err       bool
	}{
		{"dynamic", "\tlinux-vdso.so.1 (0x00007ffd)\n\tlibz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x00007f1)\n\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f2)\n\t/lib64/ld-linux-x86-64.so.2 (0x00007f3)\n",
			[]string{"/lib/x86_64-linux-gnu/libz.so.1", "/lib/x86_64-linux-gnu/libc.so.6", "/lib64/ld-linux-x86-64.so.2"}, false},
		{"missing library", "\tlibfoo.so.1 => not found\n", nil, true},
		{"nothing", "", nil, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := parseLdd([]byte(c.out))
			if (err != nil) != c.err || !reflect.DeepEqual(got, c.want) {
				t.Errorf("parseLdd = %q, %v; want %q (error %v)", got, err, c.want, c.err)
			}
		})
	}
}

// TestTreeCPIO: host files keep their paths through the host's links, a
// link is kept as a link with its target added, parents come before
// children, and a dynamically linked binary brings its libraries.
func TestTreeCPIO(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "real", "sub"), 0o755)
	os.WriteFile(filepath.Join(dir, "real", "sub", "f"), []byte("data"), 0o640)
	os.Symlink("real", filepath.Join(dir, "link"))
	os.Symlink("f", filepath.Join(dir, "real", "sub", "alias"))
	tr := NewTree()
	if err := tr.Host(filepath.Join(dir, "link", "sub", "alias"), "/bin/sh"); err != nil {
		t.Fatal(err)
	}
	tr.Data("/etc/x", []byte("y"), 0o644)
	var b bytes.Buffer
	if err := tr.WriteCPIO(&b); err != nil {
		t.Fatal(err)
	}
	recs, err := cpio.ReadAllRecords(cpio.Newc.Reader(bytes.NewReader(b.Bytes())))
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]cpio.Record{}
	for _, r := range recs {
		if _, dup := seen[r.Name]; dup {
			t.Errorf("%s twice", r.Name)
		}
		if parent := filepath.Dir(r.Name); parent != "." {
			if _, ok := seen[parent]; !ok {
				t.Errorf("%s before its directory", r.Name)
			}
		}
		seen[r.Name] = r
	}
	rel := func(p string) string { return p[1:] }
	f, ok := seen[rel(filepath.Join(dir, "real", "sub", "f"))]
	if !ok || f.FileSize != 4 || f.Mode&0o777 != 0o640 {
		t.Errorf("the link's target file: %+v %v", f.Info, ok)
	}
	if a, ok := seen[rel(filepath.Join(dir, "real", "sub", "alias"))]; !ok || a.Mode&cpio.S_IFMT != cpio.S_IFLNK {
		t.Errorf("the link: %+v %v", a.Info, ok)
	}
	libc := false
	for n := range seen {
		if filepath.Base(n) == "libc.so.6" {
			libc = true
		}
	}
	if !libc {
		t.Error("/bin/sh came without libc")
	}
	if _, ok := seen["etc/x"]; !ok {
		t.Error("data file missing")
	}
}
