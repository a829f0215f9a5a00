// This file owns a pod's volumes and files: preparing volumes for the
// driver, reading file contents (a uri one fetched within bounds: see
// uriFetcher), and the agent's container spec that mounts and writes them.

package pod

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/hyperhq/hyperd-go/sandbox"
)

// prepareVolume resolves a pod volume to what the driver can attach: with
// the local driver a host directory or file (a fresh directory under the
// pod's dir when the volume has no source); with kvm a disk image file (a fresh sparse
// ext4 image when there is no source; host directories cannot be shared
// into the VM: there is no 9p/virtiofs).
func (d *Daemon) prepareVolume(podID string, v VolumeSpec) (VolumeSpec, error) {
	kvm := d.drv.Name() == "kvm"
	if v.Source == "" {
		dir := filepath.Join(d.podDir(podID), "volumes")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return v, err
		}
		if !kvm {
			v.Source = filepath.Join(dir, v.Name)
			return v, os.MkdirAll(v.Source, 0o755)
		}
		v.Source, v.Format, v.Fstype = filepath.Join(dir, v.Name+".img"), "raw", "ext4"
		if _, err := os.Stat(v.Source); err == nil {
			return v, nil
		}
		f, err := os.Create(v.Source)
		if err != nil {
			return v, err
		}
		f.Truncate(1 << 30)
		f.Close()
		if out, err := exec.Command("mkfs.ext4", "-q", "-F", v.Source).CombinedOutput(); err != nil {
			os.Remove(v.Source)
			return v, fmt.Errorf("volume %s: mkfs.ext4: %v: %s", v.Name, err, out)
		}
		// a new volume is empty, as with Docker and the local driver:
		// no lost+found (e2fsck makes one again if it ever needs it)
		if out, err := exec.Command("debugfs", "-w", "-R", "rmdir lost+found", v.Source).CombinedOutput(); err != nil {
			os.Remove(v.Source)
			return v, fmt.Errorf("volume %s: debugfs rmdir lost+found: %v: %s", v.Name, err, out)
		}
		return v, nil
	}
	st, err := os.Stat(v.Source)
	if err != nil {
		return v, specErr("bad parameter: volume %s: source %s: %v", v.Name, v.Source, err)
	}
	if kvm && st.IsDir() {
		return v, specErr("bad parameter: volume %s: host directory %s cannot be shared into a VM (kvm driver); use a raw disk image", v.Name, v.Source)
	}
	if !kvm && !st.IsDir() && !st.Mode().IsRegular() {
		return v, specErr("bad parameter: volume %s: the local driver shares host directories and files; %s is neither", v.Name, v.Source)
	}
	return v, nil
}

// prepareVolumes prepares each of the pod's volumes (prepareVolume), by
// name.
func (d *Daemon) prepareVolumes(podID string, vols []VolumeSpec) (map[string]VolumeSpec, error) {
	out := map[string]VolumeSpec{}
	for _, v := range vols {
		vs, err := d.prepareVolume(podID, v)
		if err != nil {
			return nil, err
		}
		out[v.Name] = vs
	}
	return out, nil
}

func hasDisk(ds []sandbox.Disk, p string) bool {
	for _, d := range ds {
		if d.HostPath == p {
			return true
		}
	}
	return false
}

func fileContent(ctx context.Context, f FileSpec) ([]byte, error) {
	if f.URI != "" {
		return podFiles.fetch(ctx, f.URI)
	}
	if f.Encoding == "base64" {
		return decodeB64(f.Content)
	}
	return []byte(f.Content), nil
}

// fileContents reads each of the pod's files (fileContent), by name; on an
// error, failed names the file.
func fileContents(ctx context.Context, files []FileSpec) (contents map[string][]byte, failed string, err error) {
	contents = map[string][]byte{}
	for _, f := range files {
		b, err := fileContent(ctx, f)
		if err != nil {
			return nil, f.Name, err
		}
		contents[f.Name] = b
	}
	return contents, "", nil
}

// agentSpec builds what the agent needs for one container.
func (d *Daemon) agentSpec(sb sandbox.Sandbox, c *ctrState, hostname string, rootfs [2]string, vols map[string]VolumeSpec, files map[string][]byte) (sandbox.ContainerSpec, error) {
	d.mu.Lock()
	r := c.rec
	d.mu.Unlock()
	src, err := sb.DiskSource(rootfs[0])
	if err != nil {
		return sandbox.ContainerSpec{}, fmt.Errorf("rootfs of %s: %w", r.Name, err)
	}
	cs := sandbox.ContainerSpec{ID: r.ID, Hostname: hostname, Rootfs: src, RootfsType: rootfs[1], ReadOnlyFS: r.Spec.ReadOnly,
		Sysctl:  r.Spec.Sysctl,
		Process: sandbox.Process{Args: r.Args, Env: r.Env, Cwd: r.Workdir, User: r.User, Tty: r.Spec.Tty, OpenStdin: true}}
	for _, v := range r.Spec.Volumes {
		vs, ok := vols[v.Volume]
		if !ok {
			return cs, specErr("bad parameter: container %s: volume %s does not exist in the pod", r.Name, v.Volume)
		}
		vsrc, err := sb.DiskSource(vs.Source)
		if err != nil {
			return cs, fmt.Errorf("volume %s: %w", v.Volume, err)
		}
		fstype := ""
		if vs.Format == "raw" || vs.Format == "qcow2" {
			fstype = vs.Fstype
			if fstype == "" {
				fstype = "ext4"
			}
		}
		cs.Mounts = append(cs.Mounts, sandbox.Mount{Source: vsrc, FSType: fstype, Dest: v.Path, ReadOnly: v.ReadOnly})
	}
	for _, f := range r.Spec.Files {
		content, ok := files[f.Filename]
		if !ok {
			return cs, specErr("bad parameter: container %s: file %s does not exist in the pod", r.Name, f.Filename)
		}
		mode := uint32(0o755)
		if f.Perm != "" {
			var m uint32
			fmt.Sscanf(f.Perm, "%o", &m)
			mode = m
		}
		cs.Files = append(cs.Files, sandbox.File{Path: f.Path, Content: content, Mode: mode, UID: atoiOr(f.User, 0), GID: atoiOr(f.Group, 0)})
	}
	return cs, nil
}

func atoiOr(s string, def int) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		return def
	}
	return n
}

func decodeB64(s string) ([]byte, error) { return base64.StdEncoding.DecodeString(s) }

// podFiles fetches the pods' uri files.
var podFiles = uriFetcher{Timeout: 30 * time.Second, Limit: 16 << 20}

// uriFetcher fetches a pod file named by an http(s) uri: the whole answer
// within Timeout, at most Limit bytes (one more is an error naming the
// limit, never a silent cut), no proxy, at most 10 redirects, and never
// from an address of the host itself or of the cloud around it: every
// connection, a redirect's too, is checked at the address actually dialed
// (after DNS), so neither a redirect nor a name resolving there gets in.
// Refused (refusedAddr): loopback, unspecified (0.0.0.0 reaches the host),
// link-local (169.254.0.0/16, fe80::/10, where 169.254.169.254 is the
// metadata service of AWS, GCP, Azure and OpenStack), multicast, and the
// other metadata addresses (fd00:ec2::254, 100.100.100.200, 168.63.129.16,
// 192.0.0.192). hyperd runs as root on the host: a pod spec (or a server it
// names, through a redirect) must not read what the host serves only to
// itself or what the cloud serves only to the host. Private networks
// (10/8, 172.16/12, 192.168/16, fc00::/7) stay allowed: pod files are
// commonly served there.
type uriFetcher struct {
	Timeout       time.Duration
	Limit         int64
	AllowLoopback bool // tests only: their servers are on 127.0.0.1
}

// metadataAddrs are cloud metadata services outside link-local.
var metadataAddrs = []netip.Addr{
	netip.MustParseAddr("fd00:ec2::254"),   // AWS IMDS over IPv6
	netip.MustParseAddr("100.100.100.200"), // Alibaba Cloud
	netip.MustParseAddr("168.63.129.16"),   // Azure wireserver
	netip.MustParseAddr("192.0.0.192"),     // Oracle Cloud (legacy)
}

// refusedAddr says why a pod file may not be fetched from ip ("": it may).
func (f uriFetcher) refusedAddr(ip netip.Addr) string {
	ip = ip.Unmap()
	switch {
	case ip.IsLoopback():
		if f.AllowLoopback {
			return ""
		}
		return "loopback: the host's own services"
	case ip.IsUnspecified():
		return "unspecified: the host's own services"
	case ip.IsLinkLocalUnicast():
		return "link-local: the cloud's metadata service and the host's links"
	case ip.IsMulticast() || ip.IsLinkLocalMulticast() || ip.IsInterfaceLocalMulticast() || ip == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return "multicast or broadcast"
	}
	for _, m := range metadataAddrs {
		if ip == m {
			return "a cloud metadata service"
		}
	}
	return ""
}

// control refuses a connection before it is made, at the resolved address.
func (f uriFetcher) control(network, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("pod file: unexpected address %q: %w", address, err)
	}
	if why := f.refusedAddr(ap.Addr()); why != "" {
		return fmt.Errorf("pod files are not fetched from %s (%s)", ap.Addr(), why)
	}
	return nil
}

// fetch downloads uri (see uriFetcher).
func (f uriFetcher) fetch(ctx context.Context, uri string) ([]byte, error) {
	ctx, cancel := context.WithTimeoutCause(ctx, f.Timeout, fmt.Errorf("uri %s: not fetched within %s: %w", uri, f.Timeout, context.DeadlineExceeded))
	defer cancel()
	dialer := &net.Dialer{Timeout: f.Timeout, Control: f.control}
	tr := &http.Transport{Proxy: nil, DialContext: dialer.DialContext, TLSHandshakeTimeout: f.Timeout, ForceAttemptHTTP2: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, CheckRedirect: func(req *http.Request, via []*http.Request) error {
		if len(via) >= 10 {
			return fmt.Errorf("stopped after 10 redirects")
		}
		return nil
	}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, uri, nil)
	if err != nil {
		return nil, err
	}
	b, err := f.get(client, req)
	if err != nil && ctx.Err() != nil {
		// the timeout's cause names the uri and the limit
		return nil, context.Cause(ctx)
	}
	return b, err
}

func (f uriFetcher) get(client *http.Client, req *http.Request) ([]byte, error) {
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return nil, fmt.Errorf("GET %s: %s", req.URL, resp.Status)
	}
	tooBig := fmt.Errorf("uri %s: larger than the %s limit of a pod file", req.URL, sizeString(f.Limit))
	if resp.ContentLength > f.Limit {
		return nil, tooBig
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, f.Limit+1))
	if err != nil {
		return nil, fmt.Errorf("uri %s: %w", req.URL, err)
	}
	if int64(len(b)) > f.Limit {
		return nil, tooBig
	}
	return b, nil
}

// sizeString is n in MiB when whole, else in bytes.
func sizeString(n int64) string {
	if n >= 1<<20 && n%(1<<20) == 0 {
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%d bytes", n)
}
