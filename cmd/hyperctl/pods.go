package main

// pods.go owns the pod commands: create, run, start, stop, rm, list (ps),
// info, kill, labels and ports.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/hyperhq/hyperd-go/api"
	"github.com/hyperhq/hyperd-go/api/client"
	"github.com/hyperhq/hyperd-go/pod"
)

// createPod creates the pod, pulling a missing image once.
func (x *cli) createPod(spec []byte) (string, error) {
	id, err := x.c.CreatePod(ctx(), spec)
	if err != nil && client.StatusOf(err) == 404 && strings.Contains(err.Error(), "image") {
		var s pod.PodSpec
		if json.Unmarshal(spec, &s) == nil {
			for _, c := range s.Containers {
				fmt.Fprintf(os.Stderr, "image %s not found locally, pulling\n", c.Image)
				if perr := x.c.Pull(ctx(), c.Image, nil, nil); perr != nil {
					return "", fmt.Errorf("%v; pull: %v", err, perr)
				}
			}
			return x.c.CreatePod(ctx(), spec)
		}
	}
	return id, err
}

// createWithFlags parses run's flags (for command name) and creates the pod.
func (x *cli) createWithFlags(name string, args []string) (*runFlags, string, error) {
	var r runFlags
	fs := newFlags(name)
	r.register(fs)
	if err := fs.Parse(args); err != nil {
		return nil, "", err
	}
	spec, err := r.spec(fs.Args())
	if err != nil {
		return nil, "", err
	}
	id, err := x.createPod(spec)
	return &r, id, err
}

func cmdCreate(x *cli, args []string) error {
	_, id, err := x.createWithFlags("create", args)
	return x.printID(id, err)
}

func cmdRun(x *cli, args []string) error {
	r, id, err := x.createWithFlags("run", args)
	if err != nil {
		return err
	}
	if r.detach {
		return x.printID(id, x.c.StartPod(ctx(), id))
	}
	pi, err := x.c.PodInfo(ctx(), id)
	if err != nil {
		return err
	}
	if len(pi.Spec.Containers) == 0 {
		return x.c.StartPod(ctx(), id)
	}
	cid := pi.Spec.Containers[0].ContainerID
	tty := pi.Spec.Containers[0].Tty
	// Attach before start, as the original client does: no output is lost.
	st, err := x.c.Attach(ctx(), cid, r.stdin)
	if err != nil {
		return err
	}
	if err := x.c.StartPod(ctx(), id); err != nil {
		st.Conn.Close()
		return err
	}
	code, err := x.pumpAttached(st, cid, "", tty, r.stdin)
	if r.rm {
		if rerr := x.c.RemovePod(ctx(), id); rerr != nil {
			fmt.Fprintln(os.Stderr, "hyperctl: rm:", rerr)
		}
	}
	return exitStatus(code, err)
}

// eachPod runs op on every POD argument and prints the ids it worked for.
func (x *cli) eachPod(args []string, op func(context.Context, string) error) error {
	return forEach(args, 1, func(id string) error { return x.printID(id, op(ctx(), id)) })
}

func cmdStart(x *cli, args []string) error { return x.eachPod(args, x.c.StartPod) }

func cmdStop(x *cli, args []string) error {
	f := newFlags("stop")
	onlyPod := f.Bool("onlypod", false, "stop the containers but keep the pod's VM for the next start (stopVM=no)")
	if err := parseArgs(f, args, 1, -1); err != nil {
		return err
	}
	if *onlyPod {
		return x.eachPod(f.Args(), x.c.StopPodKeepVM)
	}
	return x.eachPod(f.Args(), x.c.StopPod)
}

func cmdRm(x *cli, args []string) error { return x.eachPod(args, x.c.RemovePod) }

// splitN splits s at its first n-1 colons (ids and names have no colons).
func splitN(s string, n int) []string {
	p := strings.SplitN(s, ":", n)
	for len(p) < n {
		p = append(p, "")
	}
	return p
}

func cmdList(x *cli, args []string) error {
	item := "pod"
	if len(args) > 0 {
		item = args[0]
	}
	r, err := x.c.List(ctx(), item, "")
	if err != nil {
		return err
	}
	var rows [][]string
	switch item {
	case "pod":
		for _, s := range r.PodData {
			rows = append(rows, splitN(s, 4))
		}
		return x.show(r, []string{"POD ID", "POD NAME", "VM NAME", "STATUS"}, rows)
	case "container":
		for _, s := range r.CData {
			p := splitN(s, 4)
			p[0] = shortID(p[0])
			rows = append(rows, p)
		}
		return x.show(r, []string{"CONTAINER ID", "NAME", "POD ID", "STATUS"}, rows)
	case "vm":
		for _, s := range r.VMData {
			rows = append(rows, splitN(s, 3))
		}
		return x.show(r, []string{"VM NAME", "POD ID", "STATUS"}, rows)
	}
	if x.json {
		return x.printJSON(r)
	}
	return nil
}

func cmdInfo(x *cli, args []string) error {
	if len(args) == 0 {
		info, err := x.c.Info(ctx())
		if err != nil {
			return err
		}
		if x.json {
			return x.printJSON(info)
		}
		fmt.Fprintf(x.out, "Pods: %d (running %d)\nContainers: %d\nImages: %d\nSandbox driver: %s\nIsolation: %s\nOperating System: %s\nData root: %s\n",
			info.Pods, info.RunningPods, info.Containers, info.Images, info.SandboxDriver, info.Isolation, info.OperatingSystem, info.DockerRootDir)
		if info.Warning != "" {
			fmt.Fprintf(x.out, "WARNING: %s\n", info.Warning)
		}
		return nil
	}
	pi, err := x.c.PodInfo(ctx(), args[0])
	if err == nil {
		return x.printJSON(pi)
	}
	if client.StatusOf(err) != 404 {
		return err
	}
	ci, err := x.c.ContainerInfo(ctx(), args[0])
	if err != nil {
		return err
	}
	return x.printJSON(ci)
}

func cmdKill(x *cli, args []string) error {
	fs := newFlags("kill")
	sig := fs.String("s", "KILL", "signal")
	if err := parseArgs(fs, args, 1, -1); err != nil {
		return err
	}
	n, err := pod.ParseSignal(*sig)
	if err != nil {
		return err
	}
	return x.c.KillPod(ctx(), fs.Arg(0), fs.Arg(1), n)
}

func cmdLabels(x *cli, args []string) error {
	fs := newFlags("labels")
	override := fs.Bool("override", false, "replace existing keys")
	if err := parseArgs(fs, args, 1, -1); err != nil {
		return err
	}
	if fs.NArg() == 1 {
		pi, err := x.c.PodInfo(ctx(), fs.Arg(0))
		if err != nil {
			return err
		}
		var rows [][]string
		for k, v := range pi.Spec.Labels {
			rows = append(rows, []string{k, v})
		}
		sort.Slice(rows, func(i, j int) bool { return rows[i][0] < rows[j][0] })
		return x.show(pi.Spec.Labels, []string{"KEY", "VALUE"}, rows)
	}
	labels := map[string]string{}
	for _, kv := range fs.Args()[1:] {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return fmt.Errorf("label %q: want K=V", kv)
		}
		labels[k] = v
	}
	return x.c.SetLabels(ctx(), fs.Arg(0), labels, *override)
}

func cmdPorts(x *cli, args []string) error {
	if len(args) < 1 {
		return usageError("ports")
	}
	if len(args) == 1 || args[1] == "ls" {
		pms, err := x.c.PortMappings(ctx(), args[0])
		if err != nil {
			return err
		}
		var rows [][]string
		for _, pm := range pms {
			rows = append(rows, []string{pm.Protocol, pm.HostPort, pm.ContainerPort})
		}
		return x.show(pms, []string{"PROTOCOL", "HOST PORT", "CONTAINER PORT"}, rows)
	}
	action := args[1]
	if action == "rm" {
		action = "delete"
	}
	var pms []api.PortMapping
	for _, p := range args[2:] {
		pm, err := parsePort(p)
		if err != nil {
			return err
		}
		pms = append(pms, api.PortMappingOf(pm))
	}
	if len(pms) == 0 {
		return errors.New("no port mapping given")
	}
	return x.c.UpdatePortMappings(ctx(), args[0], action, pms)
}
