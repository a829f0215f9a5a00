package main

// containers.go owns the container commands: exec, attach, logs, rename and
// commit, and the attached session (pumpAttached) that run shares.

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/hyperhq/hyperd-go/api"
	"github.com/hyperhq/hyperd-go/api/client"
	"golang.org/x/term"
)

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

func cmdRename(x *cli, args []string) error {
	if len(args) != 2 {
		return usageError("rename")
	}
	return x.c.RenameContainer(ctx(), args[0], args[1])
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
	repo, tag := api.SplitRepoTag(fs.Arg(1))
	return x.printID(x.c.Commit(ctx(), cid, repo, tag, *author, *msg, nil))
}
