// This file owns deciding whether a suite that failed in L1 failed by the
// emulator's fault: a proven lost interrupt (lapic.go), or L1's own kernel
// crashing while the suite ran (an oops, BUG or panic on L1's console);
// and the error for a command during which L1's kernel patched its own
// code, which is never the emulator's fault (CodePatchError).

package nested

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// crashLine matches the first line of an L1 kernel crash report on its
// console. L1 runs Debian's kernel unmodified; our code runs in its user
// space and in its guests. The crashes recorded in CI were CPU state no
// program can produce (the kernel read its current task as NULL through
// %gs inside exc_page_fault and overflowed its stack: "stack guard page was
// hit", then "corrupted stack end detected inside scheduler").
var crashLine = regexp.MustCompile(`(?m)^(\[[ 0-9.]+\] )?(Kernel panic - not syncing|BUG: |Oops: |kernel BUG at |general protection fault|.*stack guard page was hit).*$`)

// ConsoleSize is how many bytes L1's console holds: an offset for
// CrashSince.
func (l *L1) ConsoleSize() int64 {
	st, err := os.Stat(filepath.Join(l.cfg.Dir, "console.log"))
	if err != nil {
		return 0
	}
	return st.Size()
}

// CrashSince returns the crash report lines L1's kernel printed on its
// console past offset off (at most 8), "" when it printed none.
func (l *L1) CrashSince(off int64) string {
	b, err := os.ReadFile(filepath.Join(l.cfg.Dir, "console.log"))
	if err != nil || off > int64(len(b)) {
		return ""
	}
	return crashLines(string(b[off:]))
}

func crashLines(console string) string {
	m := crashLine.FindAllString(console, 8)
	return strings.Join(m, "\n")
}

// emulatorFault returns why a failed suite's run says nothing of the code
// under test, "" when the failure stands: err proves QEMU lost an
// interrupt, or L1's kernel crashed (crash holds its report lines since the
// suite started). Such a suite runs once more in a fresh L1; a fault that
// comes back fails it.
func emulatorFault(err error, crash string) string {
	switch {
	case errors.Is(err, ErrLostInterrupt):
		return fmt.Sprintf("L1 stopped: %v", err)
	case crash != "":
		return "L1's kernel crashed (the emulator's CPU state, not the suite's doing):\n" + crash
	}
	return ""
}

// CodePatchError is a command after which L1's kernel reported patching
// its own code with both vCPUs online (a static key moved to or from zero:
// l1init/keys.go). The command may have passed; it is an error all the
// same, because that patching is what freezes L1 under TCG one run in a
// few, and the trace names the key's switcher, so the fix is to hold that
// key in l1init.
type CodePatchError struct {
	Argv  []string
	Code  int
	Trace string
}

func (e *CodePatchError) Error() string {
	return fmt.Sprintf("nested: L1's kernel patched its code while %q ran (exit %d): a static key moved to or from zero with both vCPUs online, which freezes L1 under TCG now and then; hold the key for L1's life in e2e/nested/l1init/keys.go. The switches, with their stacks:\n%s", e.Argv, e.Code, e.Trace)
}
