package main

// Tests of the CRI and registry mirror options: defaults, flags, the config
// file's keys, and bad values refused at startup.

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCRIOptions(t *testing.T) {
	o, err := parseOptions(nil)
	if err != nil {
		t.Fatal(err)
	}
	if !o.criOn() || o.socket() != DefaultCRISocket || o.streamAddress() != DefaultCRIStreamAddress || len(o.RegistryMirrors) != 0 {
		t.Errorf("defaults: cri %v socket %q stream %q mirrors %v", o.criOn(), o.socket(), o.streamAddress(), o.RegistryMirrors)
	}
	o, err = parseOptions([]string{"--cri=false", "--cri-socket", "unix:///tmp/x/cri.sock", "--cri-stream-address", "",
		"--registry-mirror", "http://127.0.0.1:5000", "--registry-mirror", "gcr.io=http://127.0.0.1:5000/gcr.io"})
	if err != nil {
		t.Fatal(err)
	}
	if o.criOn() || o.socket() != "/tmp/x/cri.sock" || o.streamAddress() != "" || len(o.RegistryMirrors) != 2 {
		t.Errorf("flags: cri %v socket %q stream %q mirrors %v", o.criOn(), o.socket(), o.streamAddress(), o.RegistryMirrors)
	}
	cfg := filepath.Join(t.TempDir(), "hyperd.json")
	os.WriteFile(cfg, []byte(`{"cri": false, "cri-socket": "/run/c.sock", "registry-mirrors": ["http://127.0.0.1:5000"]}`), 0o644)
	o, err = parseOptions([]string{"--config", cfg})
	if err != nil {
		t.Fatal(err)
	}
	if o.criOn() || o.socket() != "/run/c.sock" || len(o.RegistryMirrors) != 1 {
		t.Errorf("config file: cri %v socket %q mirrors %v", o.criOn(), o.socket(), o.RegistryMirrors)
	}
	for _, bad := range [][]string{
		{"--cri-socket", "relative.sock"},
		{"--registry-mirror", "127.0.0.1:5000"},
		{"--registry-mirror", "gcr.io=ftp://h"},
	} {
		if _, err := parseOptions(bad); err == nil || !strings.Contains(err.Error(), strings.TrimPrefix(bad[0], "--")) {
			t.Errorf("%v: %v, want an error naming the flag", bad, err)
		}
	}
}
