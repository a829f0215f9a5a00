package cri

// This file starts hyperd for the CRI tests: its binaries (internal/
// testbin), a data root, the REST and CRI sockets, the registry mirrors,
// and a gRPC client of its CRI.

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/hyperhq/hyperd-go/e2e/imgtest"
	"github.com/hyperhq/hyperd-go/internal/testbin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

type hyperd struct {
	t               testing.TB
	bin, root, logf string
	sock, criSock   string
	cmd             *exec.Cmd
	exited          chan error
	rc              runtimeapi.RuntimeServiceClient
	ic              runtimeapi.ImageServiceClient
	conn            *grpc.ClientConn
	driver          string
	extra           []string
	// ns: hyperd runs in this network namespace with its CNI network
	// ("": the test's namespace, --network none)
	ns string
}

// suiteDriver is the sandbox driver of the suites that run against one
// driver: $HYPERD_E2E_DRIVER, "local" by default (e2e's own suites read
// it too). The nested runner sets it to kvm inside L1.
func suiteDriver() string {
	if d := os.Getenv("HYPERD_E2E_DRIVER"); d != "" {
		return d
	}
	return "local"
}

// nested reports whether the tests run inside the nested runner's L1
// (e2e/nested sets HYPERD_NESTED), where a pod VM's boot takes seconds.
func nested() bool { return os.Getenv("HYPERD_NESTED") != "" }

// driverFlags are the hyperd flags a driver needs here: with kvm the
// project's guest kernel named (the hyperd under test may not sit next to
// build/), and inside L1 e2e's boot deadline and retries (e2e/kvm_test.go
// driverFlags says why).
func driverFlags(t testing.TB, driver string) []string {
	t.Helper()
	if driver != "kvm" {
		return nil
	}
	kernel := filepath.Join(testbin.Repo(), "build", "guest", "vmlinux")
	if _, err := os.Stat(kernel); err != nil {
		t.Fatalf("the kvm driver needs the guest kernel: %v (run make kernel)", err)
	}
	flags := []string{"--kernel", kernel}
	if nested() {
		flags = append(flags, "--boot-timeout", "120", "--boot-retries", "2")
	}
	return flags
}

func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("the CRI e2e tests need root (make test runs as root): the local driver creates namespaces")
	}
	if _, err := imgtest.BusyboxPath(); err != nil {
		t.Fatal(err)
	}
}

// startHyperd starts hyperd with driver and extra flags, and waits for
// its CRI to answer Version.
func startHyperd(t testing.TB, driver string, extra ...string) *hyperd {
	t.Helper()
	return startHyperdIn(t, "", driver, extra...)
}

// startHyperdIn starts hyperd in the network namespace ns with its pod
// network (the default CNI network, written in its own directory).
func startHyperdIn(t testing.TB, ns, driver string, extra ...string) *hyperd {
	t.Helper()
	// not t.TempDir(): a benchmark's long name there makes the kvm
	// driver's per-pod unix socket paths longer than sun_path's 108 bytes
	tmp, err := os.MkdirTemp("", "hcri-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(tmp) })
	h := &hyperd{t: t, bin: testbin.Commands(t), root: filepath.Join(tmp, "root"), logf: filepath.Join(tmp, "hyperd.log"),
		sock: filepath.Join(tmp, "hyper.sock"), criSock: filepath.Join(tmp, "cri.sock"), driver: driver, extra: extra, ns: ns}
	if ns != "" {
		conf := filepath.Join(tmp, "cni")
		if nested() {
			// the nested runner's L1 has no iptables: the default network
			// without masquerade, firewall and portmap, as e2e's
			// TestE2ENetwork does there (hyperd forwards the CRI's port
			// mappings itself)
			os.MkdirAll(conf, 0o755)
			min := `{"cniVersion":"1.0.0","name":"hyperd","plugins":[{"type":"bridge","bridge":"hyper0","isGateway":true,"hairpinMode":true,` +
				`"ipam":{"type":"host-local","ranges":[[{"subnet":"192.168.123.0/24","gateway":"192.168.123.1"}]],"routes":[{"dst":"0.0.0.0/0"}],"dataDir":"` + filepath.Join(h.root, "network", "ipam") + `"}}]}`
			if err := os.WriteFile(filepath.Join(conf, "10-hyperd.conflist"), []byte(min), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		h.extra = append([]string{"--network", "cni", "--cni-conf-dir", conf}, h.extra...)
	}
	h.extra = append(driverFlags(t, driver), h.extra...)
	h.start()
	t.Cleanup(func() {
		if h.conn != nil {
			h.conn.Close()
		}
		h.stop(syscall.SIGTERM)
	})
	return h
}

func (h *hyperd) start() {
	t := h.t
	t.Helper()
	lf, err := os.OpenFile(h.logf, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer lf.Close()
	args := []string{"--host", "unix://" + h.sock, "--data-root", h.root, "--driver", h.driver,
		"--cri-socket", h.criSock, "--log-level", "debug", "--stop-timeout", "2"}
	if h.ns == "" {
		args = append(args, "--network", "none")
	}
	args = append(args, h.extra...)
	h.cmd = exec.Command(filepath.Join(h.bin, "hyperd"), args...)
	h.cmd.Stdout, h.cmd.Stderr = lf, lf
	h.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := startIn(h.ns, h.cmd); err != nil {
		t.Fatal(err)
	}
	h.exited = make(chan error, 1)
	go func(c *exec.Cmd, ch chan error) { ch <- c.Wait() }(h.cmd, h.exited)
	if h.conn == nil {
		h.conn, err = grpc.NewClient("unix://"+h.criSock, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		h.rc = runtimeapi.NewRuntimeServiceClient(h.conn)
		h.ic = runtimeapi.NewImageServiceClient(h.conn)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case err := <-h.exited:
			h.exited <- err
			t.Fatalf("hyperd exited at startup (%v); log:\n%s", err, h.log())
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := h.rc.Version(ctx, &runtimeapi.VersionRequest{})
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("hyperd's CRI did not answer in 30s: %v; log:\n%s", err, h.log())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// stop signals hyperd and waits for it (SIGKILL after 20s).
func (h *hyperd) stop(sig syscall.Signal) {
	if h.cmd == nil || h.cmd.Process == nil {
		return
	}
	h.cmd.Process.Signal(sig)
	select {
	case err := <-h.exited:
		h.exited <- err
	case <-time.After(20 * time.Second):
		h.cmd.Process.Kill()
		<-h.exited
	}
}

func (h *hyperd) log() string {
	b, _ := os.ReadFile(h.logf)
	if len(b) > 16<<10 {
		b = b[len(b)-16<<10:]
	}
	return string(b)
}
