// This file owns TestKVMSuites: the kvm suites of `make test` (pods in our
// VMs), run inside the nested runner's L1 where the host lacks vmx/svm, or
// directly where it has them.
package nested

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hyperhq/hyperd-go/e2e/cri"
	"github.com/hyperhq/hyperd-go/internal/kvmtest"

	"github.com/hyperhq/hyperd-go/internal/testbin"
	"github.com/hyperhq/hyperd-go/kvm"
)

// suite is one test binary and what to run of it.
type suite struct {
	name string   // log file name
	bin  string   // test binary name ("" = name): suites may share one
	pkg  string   // package to build with go test -c
	args []string // test flags
	env  []string
	// files are more host files the suite needs in L1 (at their paths);
	// nil for none
	files func() ([]string, error)
	// deadline bounds the run inside L1 (TCG times).
	deadline time.Duration
	count    int // -test.count (0: 1)
}

// pickSuites applies the developer's selection: HYPERD_NESTED_SUITES, a
// regular expression the suite names must match (make test runs all), and
// HYPERD_NESTED_COUNT, how many times each selected suite's tests run (to
// chase a rare failure inside L1).
func pickSuites(all []suite, match, count string) ([]suite, error) {
	re, err := regexp.Compile(match)
	if err != nil {
		return nil, fmt.Errorf("HYPERD_NESTED_SUITES: %v", err)
	}
	n := 1
	if count != "" {
		if n, err = strconv.Atoi(count); err != nil || n < 1 {
			return nil, fmt.Errorf("HYPERD_NESTED_COUNT %q: want a count of 1 or more", count)
		}
	}
	var picked []suite
	for _, s := range all {
		if re.MatchString(s.name) {
			s.count = n
			s.deadline *= time.Duration(n)
			picked = append(picked, s)
		}
	}
	if len(picked) == 0 {
		return nil, fmt.Errorf("HYPERD_NESTED_SUITES %q matches none of the suites", match)
	}
	return picked, nil
}

// kvmSuites are the tests that need a guest kernel to boot on our VMM. The
// e2e suites run with every pod in a VM (HYPERD_E2E_DRIVER=kvm): every
// route with the Go client and curl, attach/exec with and without tty,
// logs, tcp and udp port mappings, commit → push → pull back, /image/build
// RUN steps in VMs, stopVM=no reuse, kill -9 of hyperd with VMs running and
// reattach, the boot deadline, a guest panic, a VM killed from outside.
//
// Where the host has no usable /dev/kvm at all (make test then runs the
// host's packages with HYPERD_NO_KVM=1, internal/kvmtest), the kvm and vmm
// packages' tests run here whole; otherwise the host ran them and only the
// ones that need a booting guest run here.
func kvmSuites(hostKVM bool) []suite {
	kvmRun, vmmRun := []string{"-test.run", "^TestGuest"}, []string{"-test.run", "^TestBootLinux$"}
	if !hostKVM {
		// TestHeaderLayouts needs gcc and the kernel headers, not
		// /dev/kvm: the host ran it
		kvmRun, vmmRun = []string{"-test.skip", "^TestHeaderLayouts$"}, nil
	}
	all := []suite{
		{name: "kvm", pkg: "./kvm", args: kvmRun, deadline: 5 * time.Minute},
		{name: "vmm", pkg: "./vmm", args: vmmRun, deadline: 10 * time.Minute},
		{name: "kvmdrv", pkg: "./sandbox/kvmdrv", deadline: 10 * time.Minute},
	}
	// the e2e tests one run each: an L1 lost to the emulator (see
	// ErrLostInterrupt) costs the one test that was running
	for _, test := range []string{"TestE2EKVM", "TestE2EKVMGuestPanic", "TestE2ERoutes", "TestE2ETTY", "TestStopVM",
		"TestStopPodsOnExit", "TestE2ERegistry", "TestHyperctlBuildFlags", "TestE2ENetwork", "TestE2ETemplate"} {
		all = append(all, suite{name: "e2e-kvm-" + test, bin: "e2e-kvm", pkg: "./e2e", deadline: 20 * time.Minute,
			args: []string{"-test.run", "^" + test + "$"},
			env:  []string{"HYPERD_E2E_DRIVER=kvm"}})
	}
	// critest, cri-tools' CRI conformance suite, with every CRI pod in a VM
	// (e2e/cri TestCritest; make test's host run is its --driver local
	// run). A host without critest fails here as the local run does.
	all = append(all, suite{name: "e2e-kvm-critest", bin: "e2e-cri", pkg: "./e2e/cri", deadline: 50 * time.Minute,
		args: []string{"-test.run", "^TestCritest$"}, env: []string{"HYPERD_E2E_DRIVER=kvm"},
		files: func() ([]string, error) {
			p, err := cri.CritestPath()
			return []string{p}, err
		}})
	return all
}

func (s suite) binName() string {
	if s.bin != "" {
		return s.bin
	}
	return s.name
}

// where runs a command inside L1 or on this host.
type where interface {
	run(ctx context.Context, dir string, argv, env []string, out io.Writer) (int, error)
	String() string
}

type onHost struct{}

func (h onHost) String() string { return "hardware virtualization (directly on this host)" }
func (h onHost) run(ctx context.Context, dir string, argv, env []string, out io.Writer) (int, error) {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = out, out
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), nil
	}
	return 0, err
}

type inL1 struct{ l1 *L1 }

func (w inL1) String() string { return "nested: QEMU TCG, emulated SVM" }
func (w inL1) run(ctx context.Context, dir string, argv, env []string, out io.Writer) (int, error) {
	return w.l1.Run(ctx, Cmd{Argv: argv, Env: env, Dir: dir}, out, out)
}

// TestKVMSuites builds the kvm suites' test binaries and the project's
// commands, boots L1 with them (unless the host has vmx/svm), runs each
// suite, and fails with its log tail if it fails. Each suite's whole log is
// kept under build/nested/.
func TestKVMSuites(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("the kvm suites need root (/dev/kvm, mounts, namespaces)")
	}
	repo, err := filepath.Abs(testbin.Repo())
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(repo, "build", "nested")
	if err := os.MkdirAll(out, 0o755); err != nil {
		t.Fatal(err)
	}
	bins := filepath.Join(out, "bin")
	// the commands, static, where $HYPERD_TEST_BIN points in L1
	for _, c := range []string{"./cmd/hyperd", "./cmd/hyperctl", "./cmd/hyper-agent", "./vmm/testdata/bootinit", "./vmm/testdata/snapinit", "./e2e/udpecho"} {
		goBuild(t, repo, "build", "-trimpath", "-o", filepath.Join(bins, filepath.Base(c)), c)
	}
	hostKVM := kvmtest.Usable() == nil
	suites, err := pickSuites(kvmSuites(hostKVM), os.Getenv("HYPERD_NESTED_SUITES"), os.Getenv("HYPERD_NESTED_COUNT"))
	if err != nil {
		t.Fatal(err)
	}
	files := []string{bins}
	built := map[string]bool{}
	for _, s := range suites {
		if s.files != nil {
			more, err := s.files()
			if err != nil {
				t.Fatalf("suite %s: %v", s.name, err)
			}
			files = append(files, more...)
		}
		if built[s.binName()] {
			continue
		}
		built[s.binName()] = true
		// the package's directory (sources and testdata), where its test
		// binary runs
		files = append(files, filepath.Join(repo, s.pkg))
		bin := filepath.Join(out, "tests", s.binName()+".test")
		goBuild(t, repo, "test", "-c", "-o", bin, s.pkg)
		files = append(files, bin)
	}

	ctx := context.Background()
	var (
		w    where
		cur  *inL1               // the L1 the suites run in, when nested
		boot func() (*L1, error) // boots a fresh one
	)
	if kvm.HostHasHardwareVirt() {
		w = onHost{}
	} else {
		t0 := time.Now()
		img, err := Build(ctx, ImageConfig{Repo: repo, Out: out, Files: files})
		if err != nil {
			t.Fatal(err)
		}
		boot = func() (*L1, error) {
			// An L1 that does not come up ran none of our code (Debian's
			// kernel and l1init); QEMU's TCG has frozen one at boot
			// (l1init onlineCPUs): a boot is tried three times.
			var errs []error
			for try := 1; try <= 3; try++ {
				l1, err := Boot(ctx, Config{Kernel: img.Kernel, Initrd: img.Initrd, Dir: out, BootTimeout: 90 * time.Second})
				if err == nil {
					if try > 1 {
						t.Logf("L1 came up at boot %d; the ones before did not:\n%v", try, errors.Join(errs...))
					}
					return l1, nil
				}
				errs = append(errs, fmt.Errorf("boot %d: %w", try, err))
				keepConsole(out, fmt.Sprintf("boot-%d.console.log", try))
			}
			return nil, errors.Join(errs...)
		}
		l1, err := boot()
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("L1 built and booted in %.1fs (boot %.1fs)", time.Since(t0).Seconds(), l1.Booted.Seconds())
		cur = &inL1{l1: l1}
		defer func() {
			if cur.l1 != nil { // nil: a boot failed
				cur.l1.Kill()
			}
		}()
		w = cur
	}
	var failed, void []string
	for i, s := range suites {
		if cur != nil && i > 0 {
			// a fresh L1 per suite: whatever the emulator got wrong in
			// one stays there. The old one is killed, not powered off:
			// its suite's result is in, and a clean power-off proves
			// nothing of our code (one took over 30 s in a check).
			cur.l1.Kill()
			if cur.l1, err = boot(); err != nil {
				t.Fatalf("booting a fresh L1 for suite %s: %v", s.name, err)
			}
			t.Logf("suite %s: a fresh L1 booted in %.1fs", s.name, cur.l1.Booted.Seconds())
		}
		var off int64
		if cur != nil {
			off = cur.l1.ConsoleSize()
		}
		code, took, err := runSuite(ctx, t, w, repo, out, bins, s)
		if cur != nil && (err != nil || code != 0) {
			if why := emulatorFault(err, cur.l1.CrashSince(off)); why != "" {
				// not this suite's doing (the proof is in why): it runs
				// again, once, in a fresh L1, and the report says so
				void = append(void, s.name)
				t.Logf("suite %s: its run after %v is void, the emulator's fault; running it again in a fresh L1:\n%s", s.name, took, why)
				cur.l1.Kill()
				os.Rename(filepath.Join(out, s.name+".log"), filepath.Join(out, s.name+".void.log"))
				keepConsole(out, s.name+".void.console.log")
				if cur.l1, err = boot(); err != nil {
					t.Fatalf("booting a fresh L1: %v", err)
				}
				off = cur.l1.ConsoleSize()
				code, took, err = runSuite(ctx, t, w, repo, out, bins, s)
				if crash := cur.l1.CrashSince(off); crash != "" && (err != nil || code != 0) {
					err = fmt.Errorf("%v; L1's kernel crashed again:\n%s", err, crash)
				}
			}
		}
		if cur != nil {
			// each L1 is gone with the next suite: keep its console
			keepConsole(out, s.name+".console.log")
		}
		logPath := filepath.Join(out, s.name+".log")
		if err != nil || code != 0 {
			failed = append(failed, s.name)
			t.Errorf("suite %s (%s) failed after %v: exit %d, %v; its log is %s; tail:\n%s", s.name, s.pkg, took, code, err, logPath, tailOf(logPath))
			continue
		}
		t.Logf("suite %s (%s): passed in %v, %s", s.name, s.pkg, took, summary(logPath))
	}
	// our report line, for make test's summary
	line := fmt.Sprintf("===   kvm   ran, passed (%s): %s\n", w, strings.Join(names(suites), ", "))
	if len(failed) > 0 {
		line = fmt.Sprintf("===   kvm   ran, FAILED (%s): %s\n", w, strings.Join(failed, ", "))
	}
	if len(void) > 0 {
		line += fmt.Sprintf("===         L1 lost an interrupt or its kernel crashed (QEMU's fault) during %s: run again in a fresh L1\n", strings.Join(void, ", "))
	}
	if p := os.Getenv("HYPERD_E2E_REPORT"); p != "" {
		f, err := os.OpenFile(p, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err == nil {
			f.WriteString(line)
			f.Close()
		}
	}
	t.Log(strings.TrimSpace(line))
}

// runSuite runs one suite's test binary, its whole output in
// build/nested/<suite>.log.
func runSuite(ctx context.Context, t *testing.T, w where, repo, out, bins string, s suite) (int, time.Duration, error) {
	lf, err := os.Create(filepath.Join(out, s.name+".log"))
	if err != nil {
		t.Fatal(err)
	}
	defer lf.Close()
	env := append([]string{"HYPERD_TEST_BIN=" + bins, "HYPERD_NESTED=1"}, s.env...)
	argv := append([]string{filepath.Join(out, "tests", s.binName()+".test"), "-test.v", "-test.count=" + strconv.Itoa(max(s.count, 1)), "-test.timeout", s.deadline.String()}, s.args...)
	sctx, cancel := context.WithTimeout(ctx, s.deadline+2*time.Minute)
	defer cancel()
	t0 := time.Now()
	// in the package's directory, as go test runs a test binary
	code, err := w.run(sctx, filepath.Join(repo, s.pkg), argv, env, lf)
	return code, time.Since(t0).Round(time.Second), err
}

// keepConsole copies L1's console (build/nested/console.log, which the
// next L1 starts afresh) to name beside it.
func keepConsole(out, name string) {
	if b, err := os.ReadFile(filepath.Join(out, "console.log")); err == nil {
		os.WriteFile(filepath.Join(out, name), b, 0o644)
	}
}

// tailOf returns the last 64 KiB of a suite's log.
func tailOf(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 64<<10 {
		b = b[len(b)-64<<10:]
	}
	return string(b)
}

func names(s []suite) []string {
	var n []string
	for _, x := range s {
		n = append(n, x.name)
	}
	return n
}

func goBuild(t *testing.T, repo string, args ...string) {
	t.Helper()
	cmd := exec.Command("go", args...)
	cmd.Dir = repo
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// summary counts the PASS/FAIL lines of a go test -v log.
func summary(logPath string) string {
	b, _ := os.ReadFile(logPath)
	pass := bytes.Count(b, []byte("--- PASS"))
	fail := bytes.Count(b, []byte("--- FAIL"))
	return fmt.Sprintf("%d passed, %d failed", pass, fail)
}
