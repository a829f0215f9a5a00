package pod_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hyperhq/hyperd-go/pod"
	"github.com/hyperhq/hyperd-go/pod/podtest"
)

// TestHostileNames: ids and names that would reach host paths outside the
// data root are refused with a *SpecError, and nothing outside the data
// root is touched: a container id of ../../victim once truncated and then
// deleted a host file through its log path, a volume name of ../../..
// made directories outside the data root.
func TestHostileNames(t *testing.T) {
	for _, tc := range []struct{ name, spec string }{
		{"container id", `{"id":"p1","containers":[{"id":"../../victim","image":"busybox"}]}`},
		{"container id with a slash", `{"id":"p1","containers":[{"id":"a/b","image":"busybox"}]}`},
		{"container id dot-dot", `{"id":"p1","containers":[{"id":"..","image":"busybox"}]}`},
		{"volume name", `{"id":"p1","volumes":[{"name":"../../.."}],"containers":[{"image":"busybox","volumes":[{"volume":"../../..","path":"/v"}]}]}`},
		{"volume name absolute", `{"id":"p1","volumes":[{"name":"/etc"}],"containers":[{"image":"busybox"}]}`},
		{"file name", `{"id":"p1","files":[{"name":"../f","content":"x"}],"containers":[{"image":"busybox"}]}`},
		{"pod id", `{"id":"../p","containers":[{"image":"busybox"}]}`},
		{"container name", `{"id":"p1","containers":[{"name":"a/../b","image":"busybox"}]}`},
		{"long container id", `{"id":"p1","containers":[{"id":"` + strings.Repeat("a", 129) + `","image":"busybox"}]}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			top := t.TempDir()
			root := filepath.Join(top, "a", "b", "root")
			// <root>/logs/../../victim.log: where the old log path of
			// the first case went
			victim := filepath.Join(top, "a", "b", "victim.log")
			if err := os.MkdirAll(root, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(victim, []byte("precious"), 0o644); err != nil {
				t.Fatal(err)
			}
			d := open(t, root, podtest.NewDriver(), t.TempDir())
			defer d.Close()
			s, err := pod.DecodePodSpec([]byte(tc.spec))
			if err == nil {
				_, err = d.CreatePod(s)
			}
			if err == nil {
				// what a created pod does to the host: start, remove
				d.StartPod(context.Background(), "p1")
				d.RemovePod(context.Background(), "p1")
			}
			if b, err := os.ReadFile(victim); err != nil || string(b) != "precious" {
				t.Fatalf("a file outside the data root changed: %q %v", b, err)
			}
			for dir, want := range map[string]string{filepath.Join(top, "a"): "b", filepath.Join(top, "a", "b"): "root victim.log"} {
				var got []string
				ents, _ := os.ReadDir(dir)
				for _, e := range ents {
					got = append(got, e.Name())
				}
				if strings.Join(got, " ") != want {
					t.Fatalf("outside the data root, %s holds %v, want %s", dir, got, want)
				}
			}
			var se *pod.SpecError
			if !errors.As(err, &se) {
				t.Fatalf("CreatePod: %v, want a *SpecError", err)
			}
		})
	}
	// the same rule for a container added to a pod and for a rename
	d := open(t, t.TempDir(), podtest.NewDriver(), t.TempDir())
	defer d.Close()
	id := mustCreate(t, d, `{"id":"p2","containers":[{"name":"c1","image":"busybox"}]}`)
	var se *pod.SpecError
	if _, err := d.CreateContainer(id, &pod.ContainerSpec{ID: "../x", Image: "busybox"}); !errors.As(err, &se) {
		t.Fatalf("CreateContainer with id ../x: %v, want a *SpecError", err)
	}
	if _, err := d.RenameContainer("c1", "../c2"); !errors.As(err, &se) {
		t.Fatalf("rename to ../c2: %v, want a *SpecError", err)
	}
}
