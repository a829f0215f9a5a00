// Command hyperctl is the command line client of hyperd.
//
// main.go owns the command table, main, the output every command shares
// (JSON, tables, ids, exit status) and version; flags.go parses arguments;
// pods.go, containers.go, images.go, build.go and auth.go (login) hold the
// commands of each resource, progress.go the pull/push progress view.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/hyperhq/hyperd-go/api/client"
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
	tlsVerify := fs.Bool("tlsverify", false, "tcp://: use TLS and verify the daemon against --tlscacert")
	tlsOn := fs.Bool("tls", false, "tcp://: use TLS (implied by --tlsverify)")
	tlsCA := fs.String("tlscacert", "", "tcp://: the CA that signed the daemon's certificate")
	tlsCert := fs.String("tlscert", "", "tcp://: the client certificate (PEM) a --tlsverify daemon asks for")
	tlsKey := fs.String("tlskey", "", "tcp://: the client key (PEM)")
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
	if *tlsOn || *tlsVerify || *tlsCert != "" {
		cfg, err := client.TLSConfig(*tlsCA, *tlsCert, *tlsKey)
		if err != nil {
			fmt.Fprintln(os.Stderr, "hyperctl: tls:", err)
			os.Exit(2)
		}
		if !*tlsVerify {
			cfg.InsecureSkipVerify = true // --tls without --tlsverify, as docker
		}
		c.TLS = cfg
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

// show prints v as JSON with --json, else the table of header and rows.
func (x *cli) show(v any, header []string, rows [][]string) error {
	if x.json {
		return x.printJSON(v)
	}
	table(x.out, header, rows)
	return nil
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

// printID prints id unless err.
func (x *cli) printID(id string, err error) error {
	if err != nil {
		return err
	}
	fmt.Fprintln(x.out, id)
	return nil
}

func table(w io.Writer, header []string, rows [][]string) {
	tw := tabwriter.NewWriter(w, 0, 4, 3, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	tw.Flush()
}

func shortID(id string) string {
	if len(id) > 12 && !strings.Contains(id, "-") {
		return id[:12]
	}
	return id
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
