// Package imgtest builds a small busybox image as a docker-archive tar
// (what `docker save` writes) from a static busybox binary on the host, so
// tests and the demo need no network.
package imgtest

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// BusyboxPath finds a static busybox: /bin/busybox (Debian's busybox-static).
func BusyboxPath() (string, error) {
	for _, p := range []string{"/bin/busybox", "/usr/bin/busybox"} {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("no busybox binary: apt-get install -y busybox-static")
}

// Applets lists the binary's applets (busybox --list).
func applets(bb string) []string {
	out, err := exec.Command(bb, "--list").Output()
	if err != nil {
		return []string{"sh", "echo", "cat", "sleep", "ls", "env", "true", "false"}
	}
	return strings.Fields(string(out))
}

// Rootfs lays out a busybox root file system in the directory root (made
// if missing): busybox at /bin/busybox with relative applet links (busybox
// --install -s would link to the host path), /etc/passwd and /etc/group
// with root and nobody, a sticky /tmp, empty /proc /sys /dev /root /var/lib.
func Rootfs(root string) error {
	bb, err := BusyboxPath()
	if err != nil {
		return err
	}
	for _, d := range []string{"bin", "etc", "tmp", "proc", "sys", "dev", "root", "var/lib"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			return err
		}
	}
	if err := os.Chmod(filepath.Join(root, "tmp"), 0o1777); err != nil {
		return err
	}
	bin, err := os.ReadFile(bb)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(root, "bin/busybox"), bin, 0o755); err != nil {
		return err
	}
	out, err := exec.Command(bb, "--list").Output()
	if err != nil {
		return fmt.Errorf("busybox --list: %w", err)
	}
	for _, a := range strings.Fields(string(out)) {
		if a != "busybox" && !strings.Contains(a, "/") {
			if err := os.Symlink("busybox", filepath.Join(root, "bin", a)); err != nil {
				return err
			}
		}
	}
	for name, content := range map[string]string{
		"etc/passwd": "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
		"etc/group":  "root:x:0:\nnogroup:x:65534:\n",
	} {
		if err := os.WriteFile(filepath.Join(root, name), []byte(content), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// File is one more regular file for an image's layer.
type File struct {
	Name string // path in the image, relative ("bin/udpecho")
	Mode int64
	Data []byte
}

// Write writes a docker-archive with one layer (busybox at /bin/busybox,
// applet symlinks in /bin, /etc/passwd, /tmp, and the extra files) tagged
// repoTag, CMD ["sh"].
func Write(w io.Writer, busybox, repoTag string, extra ...File) error {
	bin, err := os.ReadFile(busybox)
	if err != nil {
		return err
	}
	var layer bytes.Buffer
	lt := tar.NewWriter(&layer)
	mt := time.Unix(1700000000, 0)
	dir := func(name string, mode int64) {
		lt.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeDir, Mode: mode, ModTime: mt})
	}
	file := func(name string, mode int64, data []byte) {
		lt.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: mode, Size: int64(len(data)), ModTime: mt})
		lt.Write(data)
	}
	for _, d := range []string{"bin/", "etc/", "root/", "var/", "www/", "proc/", "sys/", "dev/"} {
		dir(d, 0o755)
	}
	dir("tmp/", 0o1777)
	file("bin/busybox", 0o755, bin)
	for _, a := range applets(busybox) {
		if a == "busybox" || strings.Contains(a, "/") {
			continue
		}
		lt.WriteHeader(&tar.Header{Name: "bin/" + a, Typeflag: tar.TypeSymlink, Linkname: "busybox", Mode: 0o777, ModTime: mt})
	}
	file("etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"))
	file("etc/group", 0o644, []byte("root:x:0:\nnogroup:x:65534:\n"))
	file("www/index.html", 0o644, []byte("hello from the busybox image\n"))
	for _, f := range extra {
		file(f.Name, f.Mode, f.Data)
	}
	if err := lt.Close(); err != nil {
		return err
	}
	lsum := sha256.Sum256(layer.Bytes())
	diffID := "sha256:" + hex.EncodeToString(lsum[:])
	cfg := map[string]any{
		"architecture": "amd64", "os": "linux", "created": mt.UTC().Format(time.RFC3339),
		"config":  map[string]any{"Cmd": []string{"sh"}, "Env": []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}, "WorkingDir": "/"},
		"rootfs":  map[string]any{"type": "layers", "diff_ids": []string{diffID}},
		"history": []map[string]any{{"created": mt.UTC().Format(time.RFC3339), "created_by": "imgtest: busybox from " + busybox}},
	}
	cfgJSON, _ := json.Marshal(cfg)
	csum := sha256.Sum256(cfgJSON)
	cfgName := hex.EncodeToString(csum[:]) + ".json"
	layerName := hex.EncodeToString(lsum[:]) + "/layer.tar"
	manifest, _ := json.Marshal([]map[string]any{{"Config": cfgName, "RepoTags": []string{repoTag}, "Layers": []string{layerName}}})
	ot := tar.NewWriter(w)
	put := func(name string, data []byte) error {
		if err := ot.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(data)), ModTime: mt}); err != nil {
			return err
		}
		_, err := ot.Write(data)
		return err
	}
	ot.WriteHeader(&tar.Header{Name: hex.EncodeToString(lsum[:]) + "/", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: mt})
	for _, f := range []struct {
		n string
		d []byte
	}{{layerName, layer.Bytes()}, {cfgName, cfgJSON}, {"manifest.json", manifest}} {
		if err := put(f.n, f.d); err != nil {
			return err
		}
	}
	return ot.Close()
}

// TarFiles reads a tar stream (e.g. a committed layer) into entry name →
// content (empty for directories, links and whiteouts).
func TarFiles(r io.Reader) (map[string]string, error) {
	tr := tar.NewReader(r)
	got := map[string]string{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return got, nil
		}
		if err != nil {
			return got, err
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			return got, err
		}
		got[h.Name] = string(b)
	}
}
