// This file tests snapshots end to end: the project's kernel with a test
// init (testdata/snapinit) that counts and serves vsock is booted,
// snapshotted while it runs, and restored twice with new devices; each
// restored guest keeps counting from where it was, answers on its own new
// vsock socket, reads the disk attached to its empty slot, and reads the
// virtio-rng.

package vmm

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hyperhq/hyperd-go/kvm"
	"github.com/hyperhq/hyperd-go/virtio"
)

// lineLog collects a guest console's lines.
type lineLog struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	lines []string
}

func (l *lineLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Write(p)
	for {
		i := bytes.IndexByte(l.buf.Bytes(), '\n')
		if i < 0 {
			break
		}
		l.lines = append(l.lines, strings.TrimRight(string(l.buf.Next(i+1)), "\r\n"))
	}
	return len(p), nil
}

// wait returns the first submatch of the first line (from line from on)
// matching re, waiting up to d.
func (l *lineLog) wait(re *regexp.Regexp, from int, d time.Duration) (string, int, bool) {
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		l.mu.Lock()
		for i := from; i < len(l.lines); i++ {
			if m := re.FindStringSubmatch(l.lines[i]); m != nil {
				l.mu.Unlock()
				return m[len(m)-1], i, true
			}
		}
		l.mu.Unlock()
		time.Sleep(10 * time.Millisecond)
	}
	return "", 0, false
}

func (l *lineLog) tail(n int) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines[max(0, len(l.lines)-n):], "\n")
}

var tickLine = regexp.MustCompile(`SNAPINIT: tick (\d+)`)

// ask sends one command to the guest's port 1024 through the VM's hybrid
// vsock socket and returns its answer. A connection made while a restored
// guest has not yet handled its transport reset is refused or wiped (the
// device holds it back for a while, see virtio's resetAckWait): it dials
// again, for up to 30 s.
func ask(t *testing.T, uds, cmd string) string {
	t.Helper()
	var last error
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		answer, err := askOnce(uds, cmd)
		if err == nil {
			return answer
		}
		last = err
	}
	t.Fatalf("%s: %v", cmd, last)
	return ""
}

func askOnce(uds, cmd string) (string, error) {
	c, err := net.DialTimeout("unix", uds, 10*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "CONNECT 1024\n")
	r := bufio.NewReader(c)
	if ok, err := r.ReadString('\n'); err != nil || !strings.HasPrefix(ok, "OK ") {
		return "", fmt.Errorf("CONNECT 1024 on %s answered %q, %v", uds, ok, err)
	}
	fmt.Fprintf(c, "%s\n", cmd)
	line, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(line), nil
}

// allocated is the disk space a file takes (a sparse file less than its size).
func allocated(st os.FileInfo) int64 {
	if s, ok := st.Sys().(*syscall.Stat_t); ok {
		return s.Blocks * 512
	}
	return st.Size()
}

func TestSnapshotRestore(t *testing.T) {
	needKVM(t)
	if !kvm.HostHasHardwareVirt() {
		t.Fatal("a snapshot round trip boots Linux to user space, which needs hardware virtualization; this host's KVM is software-nested (the nested runner's L1 runs this test)")
	}
	kernel := filepath.Join(repoRoot(), "build", "guest", "vmlinux")
	if _, err := os.Stat(kernel); err != nil {
		t.Fatalf("the project's guest kernel: %v (run make kernel)", err)
	}
	initrd := testInitramfs(t, "./vmm/testdata/snapinit", "snapinit.cpio.gz")
	dir := t.TempDir()
	snapDir := filepath.Join(dir, "snap")
	if err := os.Mkdir(snapDir, 0o700); err != nil {
		t.Fatal(err)
	}

	// the template: an empty disk slot, vsock, rng
	uds0 := filepath.Join(dir, "v0.sock")
	vs, err := virtio.NewVsock(virtio.VsockConfig{GuestCID: 3, UDS: uds0})
	if err != nil {
		t.Fatal(err)
	}
	con0 := &lineLog{}
	m, err := New(Config{Kernel: kernel, Initrd: initrd, Cmdline: "console=ttyS0 quiet reboot=k panic=-1 pci=off", MemMiB: 128, CPUs: 2,
		Console: con0, Devices: []virtio.Device{virtio.NewBlkSlot(), vs, virtio.NewRng()}})
	if err != nil {
		t.Fatal(err)
	}
	m.Start()
	defer m.Stop()
	if _, _, ok := con0.wait(tickLine, 0, 60*time.Second); !ok {
		t.Fatalf("the guest did not start counting; its vCPUs:\n%s\nconsole:\n%s", vcpuDump(m), con0.tail(30))
	}
	if got := ask(t, uds0, "echo before"); got != "before" {
		t.Fatalf("echo before the snapshot: %q", got)
	}
	start := time.Now()
	if err := m.SnapshotAndStop(snapDir, 10*time.Second); err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	took := time.Since(start)
	if res := m.Wait(); res.Reason != StopSnapshot {
		t.Fatalf("the snapshotted machine stopped with %v", res)
	}
	last, _ := strconv.Atoi(lastTick(con0))
	st, _ := os.Stat(filepath.Join(snapDir, SnapshotMemoryFile))
	t.Logf("snapshot in %v at tick %d; memory file %d MiB apparent, %d MiB allocated", took, last, st.Size()>>20, allocated(st)>>20)

	for i := 1; i <= 2; i++ {
		t.Run(fmt.Sprintf("restore%d", i), func(t *testing.T) {
			disk := filepath.Join(dir, fmt.Sprintf("disk%d", i))
			pattern := bytes.Repeat([]byte{byte(0xa0 + i)}, 16)
			if err := os.WriteFile(disk, append(pattern, make([]byte, 1<<20-16)...), 0o600); err != nil {
				t.Fatal(err)
			}
			blk := virtio.NewBlkSlot()
			if err := blk.Attach(disk, true); err != nil {
				t.Fatal(err)
			}
			uds := filepath.Join(dir, fmt.Sprintf("v%d.sock", i))
			// the first keeps the template's CID, the second gets a new one
			cid := map[int]uint64{1: 3, 2: 7}[i]
			vs, err := virtio.NewVsock(virtio.VsockConfig{GuestCID: cid, UDS: uds, Logf: t.Logf})
			if err != nil {
				t.Fatal(err)
			}
			con := &lineLog{}
			start := time.Now()
			r, err := Restore(RestoreConfig{Dir: snapDir, Console: con, Devices: []virtio.Device{blk, vs, virtio.NewRng()}})
			if err != nil {
				t.Fatalf("restore: %v", err)
			}
			r.Start()
			defer func() {
				r.Stop()
				r.Wait()
			}()
			first, _, ok := con.wait(tickLine, 0, 30*time.Second)
			if !ok {
				t.Fatalf("the restored guest does not count; console:\n%s\nnotes %v", con.tail(30), r.Notes())
			}
			t.Logf("restored in %v (first tick %s; notes %v)", time.Since(start), first, r.Notes())
			n, _ := strconv.Atoi(first)
			if n <= last-2 || n > last+20 {
				t.Errorf("the restored guest's first tick is %d; the snapshot was taken at tick %d (it must count on, not restart)", n, last)
			}
			if got := ask(t, uds, "echo after"); got != "after" {
				t.Errorf("echo after restore: %q", got)
			}
			if got := ask(t, uds, "disk"); got != hex.EncodeToString(pattern) {
				t.Errorf("the disk attached at restore reads %q, want %x", got, pattern)
			}
			if got := ask(t, uds, "rng"); len(got) != 32 || strings.HasPrefix(got, "error") {
				t.Errorf("virtio-rng after restore: %q", got)
			}
			if _, _, ok := con.wait(regexp.MustCompile(`SNAPINIT: tick (`+strconv.Itoa(n+5)+`)$`), 0, 10*time.Second); !ok {
				t.Errorf("the restored guest stopped counting; console:\n%s", con.tail(10))
			}
		})
	}
}

func lastTick(l *lineLog) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := len(l.lines) - 1; i >= 0; i-- {
		if m := tickLine.FindStringSubmatch(l.lines[i]); m != nil {
			return m[1]
		}
	}
	return "0"
}
