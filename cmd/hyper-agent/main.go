package main

import (
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"strings"
	"time"

	"github.com/hyperhq/hyperd-go/agent"
	"github.com/hyperhq/hyperd-go/internal/userns"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == userns.HoldArg {
		userns.RunHold()
	}
	if len(os.Args) > 1 && os.Args[1] == "init" {
		if err := agent.RunInit(); err != nil {
			fmt.Fprintln(os.Stderr, "hyper-agent init:", err)
		}
		os.Exit(1)
	}
	// PID 1 without --socket is the VM's init (the kernel may pass stray
	// command-line words as arguments); local mode is PID 1 of its pid
	// namespace too, but always has --socket.
	if os.Getpid() == 1 && !hasFlag(os.Args[1:], "socket") && !hasFlag(os.Args[1:], "serial") {
		vmMain()
		return
	}
	fs := flag.NewFlagSet("hyper-agent", flag.ExitOnError)
	sock := fs.String("socket", "", "unix socket to listen on (local mode)")
	serial := fs.String("serial", "", "serial port / char device to serve on, connections multiplexed (instead of --socket)")
	state := fs.String("state-dir", "", "directory for container scratch and logs")
	cg := fs.String("cgroup-root", "", "cgroup v2 directory for containers (\"\" = none)")
	memMiB := fs.Int("memory-mib", 0, "memory limit of all containers together, MiB (0 = none; needs --cgroup-root)")
	cpus := fs.Int("cpus", 0, "CPU time limit of all containers together, in CPUs (0 = none; needs --cgroup-root)")
	pids := fs.Int("pids", 0, "process limit of all containers together (0 = none; needs --cgroup-root)")
	vm := fs.Bool("vm", false, "run as PID 1 of a VM (vsock)")
	usernsMap := fs.String("userns", "", "HOST:SIZE: containers in a user namespace mapping their ids 0..SIZE-1 to HOST.. (local mode; \"\" = none)")
	fs.Parse(os.Args[1:])
	if *vm {
		vmMain()
		return
	}
	if (*sock == "") == (*serial == "") || *state == "" {
		log.Fatal("hyper-agent: --state-dir and one of --socket or --serial are required in local mode")
	}
	if os.Getpid() == 1 {
		if err := agent.PrepareLocal(); err != nil {
			log.Fatalf("hyper-agent: %v", err)
		}
	}
	cfg := agent.Config{StateDir: *state, CgroupRoot: *cg,
		Limits: agent.Limits{MemoryBytes: int64(*memMiB) << 20, CPUs: *cpus, Pids: *pids}}
	if *usernsMap != "" {
		u, err := userns.Parse(*usernsMap)
		if err != nil {
			log.Fatalf("hyper-agent: --userns: %v", err)
		}
		cfg.UserNS = &u
	}
	s, err := agent.NewServer(cfg)
	if err != nil {
		log.Fatalf("hyper-agent: %v", err)
	}
	var tr agent.Transport = agent.UnixTransport{Path: *sock}
	if *serial != "" {
		tr = agent.SerialTransport{Path: *serial}
	}
	ln, err := tr.Listen()
	if err != nil {
		log.Fatalf("hyper-agent: %v", err)
	}
	var mine os.FileInfo
	if *sock != "" {
		mine, _ = os.Stat(*sock)
		go watchSocket(s, *sock)
	}
	if err := s.Serve(ln); err != nil {
		log.Fatalf("hyper-agent: %v", err)
	}
	// remove the socket only if it is still ours, not a successor's
	if now, err := os.Stat(*sock); *sock != "" && err == nil && mine != nil && os.SameFile(mine, now) {
		os.Remove(*sock)
	}
}

func vmMain() {
	l := log.New(os.Stderr, "hyper-agent: ", 0)
	if err := agent.InitVM(); err != nil {
		l.Printf("init: %v", err) // keep going: the daemon learns more from a live agent
	}
	os.MkdirAll("/run/hyper", 0o755)
	s, err := agent.NewServer(agent.Config{StateDir: "/run/hyper", CgroupRoot: "/sys/fs/cgroup/hyperd", Self: "/init", PowerOff: agent.PowerOff, Log: l})
	if err != nil {
		l.Printf("%v", err)
		agent.PowerOff()
	}
	// hyper_agent_serial=/dev/hvc1 on the kernel command line (the kernel
	// hands unknown key=value words to init as environment) serves on that
	// serial port / virtio-console instead of vsock (test harness, no vsock).
	var ln net.Listener
	if dev := os.Getenv("hyper_agent_serial"); dev != "" {
		ln, err = agent.SerialTransport{Path: dev}.Listen()
	} else {
		ln, err = agent.VsockTransport{Port: 1024}.Listen()
	}
	if err != nil {
		l.Printf("listen: %v", err)
		agent.PowerOff()
	}
	if os.Getenv("hyper_agent_serial") == "" {
		if err := agent.NotifyReady(1025); err != nil {
			l.Printf("ready signal: %v", err)
		}
	}
	if err := s.Serve(ln); err != nil {
		l.Printf("serve: %v", err)
	}
	<-s.Done()
	select {} // PowerOff runs; PID 1 must not exit
}

func hasFlag(args []string, name string) bool {
	for _, a := range args {
		if a == "-"+name || a == "--"+name || strings.HasPrefix(a, "-"+name+"=") || strings.HasPrefix(a, "--"+name+"=") {
			return true
		}
	}
	return false
}

// watchSocket shuts the agent down once its socket is gone or replaced
// (the pod's state dir was deleted): nobody can reach it any more, and its
// containers would otherwise run on unmanaged.
func watchSocket(s *agent.Server, path string) {
	st, err := os.Stat(path)
	if err != nil {
		return
	}
	for {
		select {
		case <-s.Done():
			return
		case <-time.After(2 * time.Second):
		}
		now, err := os.Stat(path)
		if err != nil || !os.SameFile(st, now) {
			log.Printf("hyper-agent: socket %s is gone: shutting down", path)
			s.Shutdown()
			return
		}
	}
}
