// Command nestedrun boots the nested runner's L1 (QEMU TCG with emulated
// SVM, a real /dev/kvm inside) with the project's binaries and guest
// kernel, runs one command in it with its output streamed, and exits with
// the command's status. It is how `make demo-kvm` and `make bench` reach a
// hardware-virtualized KVM on hosts that lack vmx/svm.
//
//	nestedrun [--file PATH]... [--forward HOST:GUEST]... [--append ARGS] [--timeout 30m] -- CMD [ARG]...
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hyperhq/hyperd-go/e2e/nested"
)

type list []string

func (l *list) String() string     { return strings.Join(*l, ",") }
func (l *list) Set(s string) error { *l = append(*l, s); return nil }

func main() {
	var files, fwds, envs list
	repo := flag.String("repo", ".", "the project's root (its build/ and bin/ go into L1)")
	out := flag.String("out", "", "work directory (default: build/nested under the repo)")
	mem := flag.Int("mem", 4096, "L1 memory in MiB")
	smp := flag.Int("smp", 2, "L1 vCPUs")
	timeout := flag.Duration("timeout", 30*time.Minute, "deadline for the command")
	console := flag.Bool("console", false, "copy L1's console to stderr")
	cpu := flag.String("cpu", nested.DefaultCPU, "QEMU's -cpu for L1")
	tcgThread := flag.String("tcg-thread", "multi", "QEMU's TCG threading for L1: multi or single")
	appendLine := flag.String("append", "", "added to L1's kernel command line (module parameters such as kvm_amd.npt=0 are applied by l1init, as modprobe would)")
	attach := flag.Int("attach", 0, "run the command in an L1 already running, reached on this host port (its l1init forward; see ps for hostfwd=...-:7000)")
	flag.Var(&files, "file", "a host file or directory to copy into L1 at the same path (repeatable)")
	flag.Var(&fwds, "forward", "HOST:GUEST: expose L1's TCP port GUEST on 127.0.0.1:HOST (repeatable)")
	flag.Var(&envs, "env", "KEY=VALUE for the command (repeatable)")
	flag.Parse()
	if flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: nestedrun [flags] -- CMD [ARG]...")
		flag.PrintDefaults()
		os.Exit(2)
	}
	if *attach > 0 {
		dir := *out
		if dir == "" {
			dir = filepath.Join(*repo, "build", "nested")
		}
		code, err := nested.Attach(*attach, dir).Run(context.Background(), nested.Cmd{Argv: flag.Args(), Env: envs}, os.Stdout, os.Stderr)
		if err != nil {
			fmt.Fprintln(os.Stderr, "nestedrun:", err)
			os.Exit(1)
		}
		os.Exit(code)
	}
	code, err := run(*repo, *out, *mem, *smp, *timeout, *console, *tcgThread, *cpu, *appendLine, files, fwds, envs, flag.Args())
	if err != nil {
		fmt.Fprintln(os.Stderr, "nestedrun:", err)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

func run(repo, out string, mem, smp int, timeout time.Duration, console bool, tcgThread, cpu, appendLine string, files, fwds, envs, argv []string) (int, error) {
	repo, err := filepath.Abs(repo)
	if err != nil {
		return 1, err
	}
	if out == "" {
		out = filepath.Join(repo, "build", "nested")
	}
	var forwards []nested.Forward
	for _, f := range fwds {
		h, g, ok := strings.Cut(f, ":")
		hp, err1 := strconv.Atoi(h)
		gp, err2 := strconv.Atoi(g)
		if !ok || err1 != nil || err2 != nil || hp <= 0 || gp <= 0 || hp > 65535 || gp > 65535 {
			return 2, fmt.Errorf("--forward %q: want HOST:GUEST ports", f)
		}
		forwards = append(forwards, nested.Forward{HostPort: hp, GuestPort: gp})
	}
	for i, f := range files {
		if files[i], err = filepath.Abs(f); err != nil {
			return 1, err
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	t0 := time.Now()
	img, err := nested.Build(ctx, nested.ImageConfig{Repo: repo, Out: out, Files: files})
	if err != nil {
		return 1, err
	}
	st, _ := os.Stat(img.Initrd)
	fmt.Fprintf(os.Stderr, "nestedrun: L1 initramfs %s (%d MiB) built in %.1fs; booting L1 (QEMU TCG, -cpu max: emulated SVM)\n",
		img.Initrd, st.Size()>>20, time.Since(t0).Seconds())
	cfg := nested.Config{Kernel: img.Kernel, Initrd: img.Initrd, MemMiB: mem, CPUs: smp, Dir: out, Forwards: forwards, TCGThread: tcgThread, CPU: cpu, Append: appendLine}
	if console {
		cfg.Console = os.Stderr
	}
	l1, err := nested.Boot(ctx, cfg)
	if err != nil {
		return 1, err
	}
	defer l1.Close()
	fmt.Fprintf(os.Stderr, "nestedrun: L1 up in %.1fs; running %q\n", l1.Booted.Seconds(), argv)
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	code, err := l1.Run(rctx, nested.Cmd{Argv: argv, Env: envs, Dir: repo}, os.Stdout, os.Stderr)
	if err != nil {
		return 1, err // an L1 hang (nested.ErrHung) says so in err
	}
	return code, nil
}
