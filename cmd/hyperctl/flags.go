package main

// flags.go owns the parsing of a command's arguments: the flag sets, the
// usage errors, run's and create's flags (runFlags) and the pod spec they
// make, and HOST:CONTAINER[/udp] ports.

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/hyperhq/hyperd-go/pod"
)

type multi []string

func (m *multi) String() string { return strings.Join(*m, ",") }

func (m *multi) Set(s string) error { *m = append(*m, s); return nil }

// usageError is the error of a command called with the wrong arguments.
func usageError(name string) error { return errors.New("usage: hyperctl " + commands[name].usage) }

// parseArgs parses a command's flags (fs from newFlags) and wants min to
// max arguments after them (max < 0: no limit).
func parseArgs(fs *flag.FlagSet, args []string, min, max int) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() < min || max >= 0 && fs.NArg() > max {
		return usageError(fs.Name())
	}
	return nil
}

func newFlags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprintln(os.Stderr, "usage: hyperctl", commands[name].usage); fs.PrintDefaults() }
	return fs
}

// runFlags are shared by run and create.
type runFlags struct {
	detach, tty, stdin, rm                    bool
	name, workdir, podfile, restart, hostname string
	env, labels, publish, volumes             multi
	cpu, memory                               int
}

func (r *runFlags) register(fs *flag.FlagSet) {
	fs.BoolVar(&r.detach, "d", false, "detach: start the pod and print its id")
	fs.BoolVar(&r.tty, "t", false, "allocate a tty")
	fs.BoolVar(&r.stdin, "i", false, "keep stdin open and attach it")
	fs.BoolVar(&r.rm, "rm", false, "remove the pod when it exits")
	fs.StringVar(&r.name, "name", "", "pod id/name")
	fs.StringVar(&r.hostname, "hostname", "", "pod hostname")
	fs.StringVar(&r.workdir, "w", "", "working directory")
	fs.StringVar(&r.podfile, "podfile", "", "pod spec JSON file (podArgs)")
	fs.StringVar(&r.restart, "restart", "", "restart policy: never, always, onFailure")
	fs.Var(&r.env, "e", "environment K=V (repeatable)")
	fs.Var(&r.labels, "label", "pod label K=V (repeatable)")
	fs.Var(&r.publish, "publish", "port mapping HOST:CONTAINER[/udp] (repeatable)")
	fs.Var(&r.volumes, "v", "volume HOSTDIR:/path[:ro] (repeatable)")
	fs.IntVar(&r.cpu, "cpu", 0, "vCPUs")
	fs.IntVar(&r.memory, "memory", 0, "memory in MiB")
}

func (r *runFlags) spec(args []string) ([]byte, error) {
	if r.podfile != "" {
		return os.ReadFile(r.podfile)
	}
	if len(args) == 0 {
		return nil, errors.New("an IMAGE (or --podfile) is required")
	}
	c := pod.ContainerSpec{Image: args[0], Command: args[1:], Workdir: r.workdir, Tty: r.tty}
	for _, e := range r.env {
		k, v, _ := strings.Cut(e, "=")
		c.Envs = append(c.Envs, pod.EnvVar{Env: k, Value: v})
	}
	s := pod.PodSpec{ID: r.name, Hostname: r.hostname, RestartPolicy: r.restart, Labels: map[string]string{}, Resource: pod.Resource{VCPU: r.cpu, Memory: r.memory}}
	for _, l := range r.labels {
		k, v, _ := strings.Cut(l, "=")
		s.Labels[k] = v
	}
	for _, p := range r.publish {
		pm, err := parsePort(p)
		if err != nil {
			return nil, err
		}
		s.PortMappings = append(s.PortMappings, pm)
	}
	for i, v := range r.volumes {
		parts := strings.Split(v, ":")
		if len(parts) < 2 {
			return nil, fmt.Errorf("volume %q: want HOSTDIR:/path[:ro]", v)
		}
		name := fmt.Sprintf("vol%d", i)
		s.Volumes = append(s.Volumes, pod.VolumeSpec{Name: name, Source: parts[0], Format: "vfs"})
		c.Volumes = append(c.Volumes, pod.VolumeRef{Path: parts[1], Volume: name, ReadOnly: len(parts) > 2 && parts[2] == "ro"})
	}
	s.Containers = []pod.ContainerSpec{c}
	return json.Marshal(s)
}

func parsePort(p string) (pod.PortMapping, error) {
	proto := "tcp"
	if a, b, ok := strings.Cut(p, "/"); ok {
		p, proto = a, b
	}
	h, c, ok := strings.Cut(p, ":")
	if !ok {
		return pod.PortMapping{}, fmt.Errorf("port %q: want HOST:CONTAINER[/udp]", p)
	}
	return pod.PortMapping{HostPort: pod.PortString(h), ContainerPort: pod.PortString(c), Protocol: proto}, nil
}
