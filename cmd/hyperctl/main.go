// Command hyperctl is the command line client of hyperd.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/hyperhq/hyperd-go/api"
	"github.com/hyperhq/hyperd-go/api/client"
	"github.com/hyperhq/hyperd-go/pod"
	"golang.org/x/term"
)

var version = "0.1.0-dev"

type cli struct {
	c    *client.Client
	json bool
	out  io.Writer
}

type command struct {
	usage string
	run   func(x *cli, args []string) error
}

var commands map[string]command

func init() {
	commands = map[string]command{
		"run":     {"run [-d] [-t] [-i] [--rm] [--name NAME] [-e K=V] [-w DIR] [--label K=V] [--publish HOST:CTR[/udp]] [--cpu N] [--memory MiB] [--restart POLICY] [--podfile FILE] IMAGE [COMMAND...]", cmdRun},
		"create":  {"create [--podfile FILE | run's flags IMAGE [COMMAND...]]", cmdCreate},
		"start":   {"start POD...", cmdStart},
		"stop":    {"stop [--onlypod] POD...", cmdStop},
		"rm":      {"rm POD...", cmdRm},
		"list":    {"list [pod|container|vm]", cmdList},
		"ps":      {"ps (= list container)", func(x *cli, a []string) error { return cmdList(x, append([]string{"container"}, a...)) }},
		"info":    {"info [POD|CONTAINER]", cmdInfo},
		"exec":    {"exec [-t] [-i] POD|CONTAINER COMMAND...", cmdExec},
		"attach":  {"attach POD|CONTAINER", cmdAttach},
		"logs":    {"logs [-f] [-t] [--tail N] POD|CONTAINER", cmdLogs},
		"kill":    {"kill [-s SIGNAL] POD [CONTAINER]", cmdKill},
		"rename":  {"rename OLD NEW", cmdRename},
		"labels":  {"labels [--override] POD K=V...", cmdLabels},
		"ports":   {"ports POD | ports POD add|rm HOST:CONTAINER[/udp]...", cmdPorts},
		"commit":  {"commit [-a AUTHOR] [-m MESSAGE] CONTAINER [REPO[:TAG]]", cmdCommit},
		"images":  {"images [-a]", cmdImages},
		"pull":    {"pull IMAGE", cmdPull},
		"push":    {"push IMAGE", cmdPush},
		"rmi":     {"rmi [-f] [--no-prune] IMAGE...", cmdRmi},
		"build":   {"build -t NAME[:TAG] [-f Dockerfile] [--no-cache] [--pull] [-q] [--rm=false] [--force-rm] [--build-arg K=V] DIR", cmdBuild},
		"login":   {"login [-u USER] [-p PASSWORD] [SERVER]", cmdLogin},
		"version": {"version", cmdVersion},
		"load":    {"load -i FILE", cmdLoad},
		"save":    {"save -o FILE IMAGE...", cmdSave},
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: hyperctl [-H unix:///var/run/hyper.sock] [--json] COMMAND [ARGS]\n\ncommands:")
	var names []string
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(os.Stderr, "  %s\n", commands[n].usage)
	}
}

func main() {
	fs := flag.NewFlagSet("hyperctl", flag.ContinueOnError)
	host := fs.String("H", envOr("HYPER_HOST", client.DefaultHost), "daemon socket: unix:///path or tcp://host:port")
	fs.StringVar(host, "host", *host, "same as -H")
	asJSON := fs.Bool("json", false, "print JSON instead of tables")
	fs.Usage = usage
	if err := fs.Parse(os.Args[1:]); err != nil {
		os.Exit(2)
	}
	if fs.NArg() == 0 {
		usage()
		os.Exit(2)
	}
	cmd, ok := commands[fs.Arg(0)]
	if !ok {
		fmt.Fprintf(os.Stderr, "hyperctl: unknown command %q\n", fs.Arg(0))
		usage()
		os.Exit(2)
	}
	c, err := client.New(*host)
	if err != nil {
		fmt.Fprintln(os.Stderr, "hyperctl:", err)
		os.Exit(2)
	}
	x := &cli{c: c, json: *asJSON, out: os.Stdout}
	if err := cmd.run(x, fs.Args()[1:]); err != nil {
		var ee exitError
		if errors.As(err, &ee) {
			os.Exit(int(ee))
		}
		fmt.Fprintln(os.Stderr, "hyperctl:", err)
		os.Exit(1)
	}
}

type exitError int

func (e exitError) Error() string { return "exit status " + strconv.Itoa(int(e)) }

func envOr(k, d string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return d
}

func ctx() context.Context { return context.Background() }

func (x *cli) printJSON(v any) error {
	enc := json.NewEncoder(x.out)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

type multi []string

func (m *multi) String() string     { return strings.Join(*m, ",") }
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

// exitStatus makes an attached process's exit code hyperctl's own.
func exitStatus(code int, err error) error {
	if err != nil {
		return err
	}
	if code != 0 {
		return exitError(code)
	}
	return nil
}

// pumpAttached runs an attached session (raw terminal for tty, resize on
// SIGWINCH, signals forwarded without tty) and returns the exit code.
func (x *cli) pumpAttached(st *client.Stream, cid, execID string, tty, stdin bool) (int, error) {
	var in io.Reader
	if stdin {
		in = os.Stdin
	}
	fd := int(os.Stdin.Fd())
	if tty && term.IsTerminal(fd) {
		if old, err := term.MakeRaw(fd); err == nil {
			defer term.Restore(fd, old)
		}
		resize := func() {
			if w, h, err := term.GetSize(int(os.Stdout.Fd())); err == nil {
				x.c.Resize(ctx(), cid, execID, w, h)
			}
		}
		resize()
		winch := make(chan os.Signal, 1)
		signal.Notify(winch, syscall.SIGWINCH)
		defer signal.Stop(winch)
		go func() {
			for range winch {
				resize()
			}
		}()
	} else if execID == "" {
		sigc := make(chan os.Signal, 1)
		signal.Notify(sigc, syscall.SIGINT, syscall.SIGTERM)
		defer signal.Stop(sigc)
		go func() {
			for s := range sigc {
				x.c.KillContainer(ctx(), cid, int(s.(syscall.Signal)))
			}
		}()
	}
	if err := st.Pump(tty, in, os.Stdout, os.Stderr); err != nil {
		return 0, err
	}
	c, cancel := context.WithTimeout(ctx(), 30*time.Second)
	defer cancel()
	return x.c.ExitCode(c, cid, execID)
}

func forEach(args []string, min int, f func(string) error) error {
	if len(args) < min {
		return errors.New("missing argument")
	}
	var errs []error
	for _, a := range args {
		if err := f(a); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", a, err))
		}
	}
	return errors.Join(errs...)
}

// eachPod runs op on every POD argument and prints the ids it worked for.
func (x *cli) eachPod(args []string, op func(context.Context, string) error) error {
	return forEach(args, 1, func(id string) error { return x.printID(id, op(ctx(), id)) })
}

// printID prints id unless err.
func (x *cli) printID(id string, err error) error {
	if err != nil {
		return err
	}
	fmt.Fprintln(x.out, id)
	return nil
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

func table(w io.Writer, header []string, rows [][]string) {
	tw := tabwriter.NewWriter(w, 0, 4, 3, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	tw.Flush()
}

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
	if x.json {
		return x.printJSON(r)
	}
	var rows [][]string
	switch item {
	case "pod":
		for _, s := range r.PodData {
			rows = append(rows, splitN(s, 4))
		}
		table(x.out, []string{"POD ID", "POD NAME", "VM NAME", "STATUS"}, rows)
	case "container":
		for _, s := range r.CData {
			p := splitN(s, 4)
			p[0] = shortID(p[0])
			rows = append(rows, p)
		}
		table(x.out, []string{"CONTAINER ID", "NAME", "POD ID", "STATUS"}, rows)
	case "vm":
		for _, s := range r.VMData {
			rows = append(rows, splitN(s, 3))
		}
		table(x.out, []string{"VM NAME", "POD ID", "STATUS"}, rows)
	}
	return nil
}

func shortID(id string) string {
	if len(id) > 12 && !strings.Contains(id, "-") {
		return id[:12]
	}
	return id
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

// resolveContainer accepts a container or a pod (its first container).
func (x *cli) resolveContainer(ref string) (string, bool, error) {
	ci, err := x.c.ContainerInfo(ctx(), ref)
	if err == nil {
		return ci.Container.ContainerID, ci.Container.Tty, nil
	}
	if client.StatusOf(err) != 404 {
		return "", false, err
	}
	pi, perr := x.c.PodInfo(ctx(), ref)
	if perr != nil {
		return "", false, fmt.Errorf("no container or pod %s", ref)
	}
	if len(pi.Spec.Containers) == 0 {
		return "", false, fmt.Errorf("pod %s has no containers", ref)
	}
	return pi.Spec.Containers[0].ContainerID, pi.Spec.Containers[0].Tty, nil
}

func cmdExec(x *cli, args []string) error {
	fs := newFlags("exec")
	tty := fs.Bool("t", false, "allocate a tty")
	stdin := fs.Bool("i", false, "attach stdin")
	if err := parseArgs(fs, args, 2, -1); err != nil {
		return err
	}
	cid, _, err := x.resolveContainer(fs.Arg(0))
	if err != nil {
		return err
	}
	eid, err := x.c.ExecCreate(ctx(), cid, fs.Args()[1:], *tty)
	if err != nil {
		return err
	}
	st, err := x.c.ExecStart(ctx(), cid, eid)
	if err != nil {
		return err
	}
	return exitStatus(x.pumpAttached(st, cid, eid, *tty, *stdin))
}

func cmdAttach(x *cli, args []string) error {
	if len(args) != 1 {
		return usageError("attach")
	}
	cid, tty, err := x.resolveContainer(args[0])
	if err != nil {
		return err
	}
	st, err := x.c.Attach(ctx(), cid, true)
	if err != nil {
		return err
	}
	return exitStatus(x.pumpAttached(st, cid, "", tty, true))
}

func cmdLogs(x *cli, args []string) error {
	fs := newFlags("logs")
	follow := fs.Bool("f", false, "follow")
	ts := fs.Bool("t", false, "timestamps")
	tail := fs.String("tail", "all", "number of lines from the end, or all")
	if err := parseArgs(fs, args, 1, 1); err != nil {
		return err
	}
	cid, tty, err := x.resolveContainer(fs.Arg(0))
	if err != nil {
		return err
	}
	return x.c.Logs(ctx(), cid, client.LogsOptions{Stdout: true, Stderr: true, Follow: *follow, Timestamps: *ts, Tail: *tail}, tty, os.Stdout, os.Stderr)
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

func cmdRename(x *cli, args []string) error {
	if len(args) != 2 {
		return usageError("rename")
	}
	return x.c.RenameContainer(ctx(), args[0], args[1])
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
		if x.json {
			return x.printJSON(pi.Spec.Labels)
		}
		var rows [][]string
		for k, v := range pi.Spec.Labels {
			rows = append(rows, []string{k, v})
		}
		sort.Slice(rows, func(i, j int) bool { return rows[i][0] < rows[j][0] })
		table(x.out, []string{"KEY", "VALUE"}, rows)
		return nil
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
		if x.json {
			return x.printJSON(pms)
		}
		var rows [][]string
		for _, pm := range pms {
			rows = append(rows, []string{pm.Protocol, pm.HostPort, pm.ContainerPort})
		}
		table(x.out, []string{"PROTOCOL", "HOST PORT", "CONTAINER PORT"}, rows)
		return nil
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
		pms = append(pms, api.PortMapping{HostPort: string(pm.HostPort), ContainerPort: string(pm.ContainerPort), Protocol: pm.Protocol})
	}
	if len(pms) == 0 {
		return errors.New("no port mapping given")
	}
	return x.c.UpdatePortMappings(ctx(), args[0], action, pms)
}

func cmdCommit(x *cli, args []string) error {
	fs := newFlags("commit")
	author := fs.String("a", "", "author")
	msg := fs.String("m", "", "commit message")
	if err := parseArgs(fs, args, 1, -1); err != nil {
		return err
	}
	cid, _, err := x.resolveContainer(fs.Arg(0))
	if err != nil {
		return err
	}
	repo, tag := fs.Arg(1), ""
	if i := strings.LastIndexByte(repo, ':'); i > strings.LastIndexByte(repo, '/') {
		repo, tag = repo[:i], repo[i+1:]
	}
	id, err := x.c.Commit(ctx(), cid, repo, tag, *author, *msg, nil)
	if err != nil {
		return err
	}
	fmt.Fprintln(x.out, id)
	return nil
}

func cmdImages(x *cli, args []string) error {
	fs := newFlags("images")
	all := fs.Bool("a", false, "all images")
	if err := fs.Parse(args); err != nil {
		return err
	}
	list, err := x.c.Images(ctx(), *all)
	if err != nil {
		return err
	}
	var rows [][]string
	type img struct{ Repository, Tag, ID, Created, Size string }
	var imgs []img
	for _, s := range list {
		// repo may contain ':' (registry port): split from the right
		p := strings.Split(s, ":")
		if len(p) < 5 {
			continue
		}
		n := len(p)
		im := img{Repository: strings.Join(p[:n-4], ":"), Tag: p[n-4], ID: p[n-3], Created: p[n-2], Size: p[n-1]}
		imgs = append(imgs, im)
		created := im.Created
		if sec, err := strconv.ParseInt(im.Created, 10, 64); err == nil {
			created = time.Unix(sec, 0).UTC().Format("2006-01-02 15:04:05")
		}
		size := im.Size
		if b, err := strconv.ParseInt(im.Size, 10, 64); err == nil {
			size = humanSize(b)
		}
		rows = append(rows, []string{im.Repository, im.Tag, shortID(im.ID), created, size})
	}
	if x.json {
		return x.printJSON(imgs)
	}
	table(x.out, []string{"REPOSITORY", "TAG", "IMAGE ID", "CREATED", "VIRTUAL SIZE"}, rows)
	return nil
}

func humanSize(b int64) string {
	f := float64(b)
	for _, u := range []string{"B", "kB", "MB", "GB"} {
		if f < 1000 {
			return fmt.Sprintf("%.3g %s", f, u)
		}
		f /= 1000
	}
	return fmt.Sprintf("%.3g TB", f)
}

func cmdPull(x *cli, args []string) error {
	return forEach(args, 1, func(ref string) error { return x.c.Pull(ctx(), ref, loadAuth(ref), x.progress()) })
}

func cmdPush(x *cli, args []string) error {
	return forEach(args, 1, func(ref string) error { return x.c.Push(ctx(), ref, loadAuth(ref), x.progress()) })
}

func cmdRmi(x *cli, args []string) error {
	fs := newFlags("rmi")
	force := fs.Bool("f", false, "force")
	noprune := fs.Bool("no-prune", false, "do not delete untagged parents")
	if err := fs.Parse(args); err != nil {
		return err
	}
	return forEach(fs.Args(), 1, func(ref string) error {
		items, err := x.c.RemoveImage(ctx(), ref, *force, *noprune)
		if err != nil {
			return err
		}
		for _, it := range items {
			if it.Untagged != "" {
				fmt.Fprintln(x.out, "Untagged:", it.Untagged)
			}
			if it.Deleted != "" {
				fmt.Fprintln(x.out, "Deleted:", it.Deleted)
			}
		}
		return nil
	})
}

func cmdVersion(x *cli, args []string) error {
	v, err := x.c.Version(ctx())
	if x.json {
		return x.printJSON(map[string]any{"client": version, "server": v, "error": errString(err)})
	}
	fmt.Fprintf(x.out, "Client version: %s\n", version)
	if err != nil {
		return err
	}
	fmt.Fprintf(x.out, "Server version: %s\nAPI version: %s\nGo version: %s\nSandbox driver: %s\n", v.Version, v.APIVersion, v.GoVersion, v.Driver)
	return nil
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func cmdLoad(x *cli, args []string) error {
	fs := newFlags("load")
	in := fs.String("i", "", "tar file (default stdin)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var r io.Reader = os.Stdin
	if *in != "" {
		f, err := os.Open(*in)
		if err != nil {
			return err
		}
		defer f.Close()
		r = f
	}
	names, err := x.c.Load(ctx(), r)
	if err != nil {
		return err
	}
	for _, n := range names {
		fmt.Fprintln(x.out, "Loaded image:", n)
	}
	return nil
}

func cmdSave(x *cli, args []string) error {
	fs := newFlags("save")
	out := fs.String("o", "", "output file (default stdout)")
	if err := parseArgs(fs, args, 1, -1); err != nil {
		return err
	}
	var w io.Writer = os.Stdout
	if *out != "" {
		f, err := os.Create(*out)
		if err != nil {
			return err
		}
		defer f.Close()
		w = f
	}
	return x.c.Save(ctx(), fs.Args(), w)
}
