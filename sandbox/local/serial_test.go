package local

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/hyperhq/hyperd-go/agent/client"
	"github.com/hyperhq/hyperd-go/agent/mux"
	"github.com/hyperhq/hyperd-go/internal/syncbuf"
	"github.com/hyperhq/hyperd-go/sandbox"
	"golang.org/x/sys/unix"
)

// TestSerialTransportContainers runs the agent binary in its namespaces as
// the local driver does, but serving on a tty (the slave of a pty stands in
// for a VM's serial port / virtio-console) with every connection
// multiplexed: containers, 10 MB of stdout, stdin EOF and a concurrent
// wait all share the one byte stream.
func TestSerialTransportContainers(t *testing.T) {
	requireRoot(t)
	ptm, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("open /dev/ptmx: %v", err)
	}
	defer ptm.Close()
	if err := unix.IoctlSetPointerInt(int(ptm.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(ptm.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	var agentLog syncbuf.Buffer
	cmd := exec.Command(agentBin, "--serial", fmt.Sprintf("/dev/pts/%d", n), "--state-dir", t.TempDir())
	cmd.Stdout, cmd.Stderr = &agentLog, &agentLog
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setsid:     true,
		Cloneflags: unix.CLONE_NEWPID | unix.CLONE_NEWNS | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC | unix.CLONE_NEWNET,
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{}) // closed once the agent was reaped
	go func() { cmd.Wait(); close(exited) }()
	defer func() {
		select {
		case <-exited:
		default:
			cmd.Process.Kill()
			<-exited
		}
	}()

	sess := mux.Client(ptm)
	defer sess.Close()
	cctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := client.New(cctx, client.MuxDialer(sess))
	if err != nil {
		t.Fatalf("connect over the serial transport: %v (agent log: %s)", err, agentLog.String())
	}
	defer c.Close()
	p := &pod{t: t, a: c, rootfs: busyboxRootfs(t)}

	// a container blocked in wait while the others run: control is not held up
	p.run("blocked", sandbox.Process{Args: []string{"cat"}, OpenStdin: true})
	blockedDone := make(chan sandbox.ExitStatus, 1)
	go func() { blockedDone <- p.wait("blocked", "") }()

	p.largeOutput("big", 10<<20) // over serial

	// stdin EOF through a stream half-close ends cat
	in, err := p.a.Attach(ctx(t), "blocked", "", true)
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("line of input\n"), 1000)
	go func() {
		in.Stdin.Write(data)
		in.Stdin.Close()
	}()
	if out := readAll(t, in.Stdout); out != string(data) {
		t.Errorf("cat echoed %d bytes, want %d", len(out), len(data))
	}
	select {
	case st := <-blockedDone:
		if st.Code != 0 {
			t.Errorf("cat exit %d after stdin EOF", st.Code)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("wait did not return after cat's stdin EOF")
	}

	p.run("fail", sandbox.Process{Args: []string{"sh", "-c", "exit 7"}})
	if st := p.wait("fail", ""); st.Code != 7 {
		t.Errorf("exit code %d, want 7", st.Code)
	}

	if err := c.Shutdown(ctx(t)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		t.Fatalf("agent still running after shutdown (log: %s)", agentLog.String())
	}
}
