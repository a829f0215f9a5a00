// This file tests the template cache's host-side logic: which pods fit a
// template, how templates are named, file digests, and the sweep of stale
// templates and unfinished builds. Building and restoring one needs a
// guest (e2e TestE2ETemplate, vmm TestSnapshotRestore).

package kvmdrv

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestTemplateFits(t *testing.T) {
	for _, tc := range []struct {
		name        string
		dir         string
		disks, nets int
		want        bool
	}{
		{"off", "", 1, 0, false},
		{"one disk", "/t", 1, 0, true},
		{"all slots", "/t", TemplateDiskSlots, TemplateNetSlots, true},
		{"too many disks", "/t", TemplateDiskSlots + 1, 0, false},
		{"too many nets", "/t", 1, TemplateNetSlots + 1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := &Driver{TemplateDir: tc.dir}
			got, why := d.templateFits(tc.disks, tc.nets)
			if got != tc.want || (!got && why == "") {
				t.Errorf("templateFits(%d, %d) = %v, %q; want %v (and a reason when not)", tc.disks, tc.nets, got, why, tc.want)
			}
		})
	}
}

func TestTemplateKey(t *testing.T) {
	in := templateInputs{Kernel: "k", Initrd: "i", Hyperd: "h", Format: 1}
	base := templateKey(in, 1, 128, "console=ttyS0")
	if base != templateKey(in, 1, 128, "console=ttyS0") {
		t.Fatal("the key is not deterministic")
	}
	changed := in
	changed.Initrd = "i2"
	for name, k := range map[string]string{
		"initramfs": templateKey(changed, 1, 128, "console=ttyS0"),
		"vcpus":     templateKey(in, 2, 128, "console=ttyS0"),
		"memory":    templateKey(in, 1, 256, "console=ttyS0"),
		"cmdline":   templateKey(in, 1, 128, "console=ttyS0 loglevel=7"),
	} {
		if k == base {
			t.Errorf("a changed %s keeps the template key %s", name, k)
		}
	}
	if filepath.Base(base) != base || len(base) > 64 {
		t.Errorf("key %q is not a short file name", base)
	}
}

func TestTemplateDigest(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	os.WriteFile(p, []byte("one"), 0o644)
	tm := &templates{digests: map[string]fileDigest{}}
	a, err := tm.digest(p)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(p, []byte("two"), 0o644)
	later := time.Now().Add(time.Second)
	os.Chtimes(p, later, later)
	b, _ := tm.digest(p)
	if a == b {
		t.Error("a rewritten file kept its digest")
	}
	if _, err := tm.digest(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("a missing file has a digest")
	}
}

func TestSweepTemplates(t *testing.T) {
	dir := t.TempDir()
	cur := templateInputs{Kernel: "k", Initrd: "i", Hyperd: "h", Format: 1}
	old := cur
	old.Hyperd = "h0"
	mk := func(name string, in *templateInputs) {
		p := filepath.Join(dir, name)
		os.MkdirAll(p, 0o700)
		if in != nil {
			b, _ := json.Marshal(in)
			os.WriteFile(filepath.Join(p, "inputs.json"), b, 0o600)
		}
	}
	mk("current", &cur)
	mk("stale", &old)
	mk("no-inputs", nil)
	mk(".build-123", &cur)
	d := &Driver{TemplateDir: dir}
	d.sweepTemplates(cur)
	for name, want := range map[string]bool{"current": true, "stale": false, "no-inputs": false, ".build-123": false} {
		_, err := os.Stat(filepath.Join(dir, name))
		if (err == nil) != want {
			t.Errorf("%s: kept %v, want %v", name, err == nil, want)
		}
	}
}
