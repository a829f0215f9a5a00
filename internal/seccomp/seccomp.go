// This file owns the policy model and the BPF assembler.

package seccomp

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// Action is a filter's verdict: the 32-bit SECCOMP_RET_* value the program
// returns (seccomp_filter.rst, "Return values").
type Action uint32

const (
	// Allow lets the syscall run (SECCOMP_RET_ALLOW).
	Allow Action = unix.SECCOMP_RET_ALLOW
	// KillProcess kills the whole process as if by an uncatchable SIGSYS
	// (SECCOMP_RET_KILL_PROCESS; it dumps core where cores are enabled).
	KillProcess Action = unix.SECCOMP_RET_KILL_PROCESS
	// Trap sends a catchable SIGSYS to the thread (SECCOMP_RET_TRAP). The
	// Go runtime treats an unexpected SIGSYS as a crash.
	Trap Action = unix.SECCOMP_RET_TRAP
	// Log allows the syscall and logs it (SECCOMP_RET_LOG): for writing a
	// policy, never for enforcing one.
	Log Action = unix.SECCOMP_RET_LOG
)

// Errno makes the syscall fail with errno e without running it
// (SECCOMP_RET_ERRNO; the low 16 bits carry e).
func Errno(e unix.Errno) Action {
	return Action(unix.SECCOMP_RET_ERRNO | uint32(e)&unix.SECCOMP_RET_DATA)
}

func (a Action) String() string {
	switch {
	case a == Allow:
		return "allow"
	case a == KillProcess:
		return "kill-process"
	case a == Trap:
		return "trap"
	case a == Log:
		return "log"
	case uint32(a)&unix.SECCOMP_RET_ACTION_FULL == unix.SECCOMP_RET_ERRNO:
		return fmt.Sprintf("errno(%d)", uint32(a)&unix.SECCOMP_RET_DATA)
	}
	return fmt.Sprintf("action(%#x)", uint32(a))
}

func (a Action) valid() bool {
	switch a {
	case Allow, KillProcess, Trap, Log:
		return true
	}
	return uint32(a)&unix.SECCOMP_RET_ACTION_FULL == unix.SECCOMP_RET_ERRNO
}

// Arg is a check on one syscall argument: args[Index] & Mask == Value,
// where a zero Mask means all 64 bits (plain equality). A mask selects a
// field, e.g. an ioctl request's type byte.
type Arg struct {
	Index int // 0..5
	Value uint64
	Mask  uint64
}

func (a Arg) mask() uint64 {
	if a.Mask == 0 {
		return ^uint64(0)
	}
	return a.Mask
}

// Rule gives the Action for one syscall. With Args, the rule applies only
// when every check holds; a syscall may have several rules, tried in order,
// and one whose checks all fail falls through to the next rule for the same
// syscall and at last to the policy's Default.
type Rule struct {
	Syscall uintptr // unix.SYS_*
	Args    []Arg
	Action  Action
}

// Policy is a whole filter: the rules, and the Action for every syscall no
// rule matches.
type Policy struct {
	Default Action
	Rules   []Rule
}

// X32SyscallBit is __X32_SYSCALL_BIT: x86-64 syscall numbers at or above it
// are the x32 ABI's.
const X32SyscallBit = 0x40000000

// Offsets into struct seccomp_data (seccomp_filter.rst, "Filter
// programs"): int nr; __u32 arch; __u64 instruction_pointer; __u64 args[6].
const (
	offNr   = 0
	offArch = 4
	offArgs = 16
)

// maxInsns is BPF_MAXINSNS: the kernel refuses longer programs.
const maxInsns = 4096

func stmt(code uint16, k uint32) unix.SockFilter { return unix.SockFilter{Code: code, K: k} }

func jump(code uint16, k uint32, jt, jf uint8) unix.SockFilter {
	return unix.SockFilter{Code: code, Jt: jt, Jf: jf, K: k}
}

const (
	ldAbs = unix.BPF_LD | unix.BPF_W | unix.BPF_ABS
	andK  = unix.BPF_ALU | unix.BPF_AND | unix.BPF_K
	jeqK  = unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K
	jgeK  = unix.BPF_JMP | unix.BPF_JGE | unix.BPF_K
	retK  = unix.BPF_RET | unix.BPF_K
)

// Build assembles the policy into a classic-BPF program:
//
//	load arch; not AUDIT_ARCH_X86_64 → kill process
//	load nr;   nr >= X32SyscallBit  → kill process
//	per syscall, in the order first named:
//	  nr != S → skip to the next syscall
//	  per rule: argument checks (low then high word), a miss skips to the next rule
//	            → the rule's action
//	  → Default (the syscall matched but none of its rules)
//	→ Default
//
// Rules for one syscall are grouped, so a syscall costs one comparison
// when it is not S.
func (p Policy) Build() ([]unix.SockFilter, error) {
	if !p.Default.valid() {
		return nil, fmt.Errorf("seccomp: invalid default action %#x", uint32(p.Default))
	}
	var order []uintptr
	groups := map[uintptr][]Rule{}
	for _, r := range p.Rules {
		if !r.Action.valid() {
			return nil, fmt.Errorf("seccomp: syscall %d: invalid action %#x", r.Syscall, uint32(r.Action))
		}
		if r.Syscall >= X32SyscallBit {
			return nil, fmt.Errorf("seccomp: syscall %d is not an x86-64 syscall number", r.Syscall)
		}
		for _, a := range r.Args {
			if a.Index < 0 || a.Index > 5 {
				return nil, fmt.Errorf("seccomp: syscall %d: argument index %d out of 0..5", r.Syscall, a.Index)
			}
			if a.Value&^a.mask() != 0 {
				return nil, fmt.Errorf("seccomp: syscall %d: argument %d: value %#x has bits outside mask %#x: it can never match", r.Syscall, a.Index, a.Value, a.Mask)
			}
		}
		if _, ok := groups[r.Syscall]; !ok {
			order = append(order, r.Syscall)
		}
		groups[r.Syscall] = append(groups[r.Syscall], r)
	}
	prog := []unix.SockFilter{
		stmt(ldAbs, offArch),
		jump(jeqK, unix.AUDIT_ARCH_X86_64, 1, 0),
		stmt(retK, uint32(KillProcess)),
		stmt(ldAbs, offNr),
		jump(jgeK, X32SyscallBit, 0, 1),
		stmt(retK, uint32(KillProcess)),
	}
	for _, nr := range order {
		body, err := groupBody(groups[nr], p.Default)
		if err != nil {
			return nil, fmt.Errorf("seccomp: syscall %d: %w", nr, err)
		}
		if len(body) > 255 {
			return nil, fmt.Errorf("seccomp: syscall %d: %d instructions of rules, more than a BPF jump spans", nr, len(body))
		}
		prog = append(prog, jump(jeqK, uint32(nr), 0, uint8(len(body))))
		prog = append(prog, body...)
	}
	prog = append(prog, stmt(retK, uint32(p.Default)))
	if len(prog) > maxInsns {
		return nil, fmt.Errorf("seccomp: %d instructions, more than BPF_MAXINSNS (%d)", len(prog), maxInsns)
	}
	return prog, nil
}

// groupBody assembles the rules of one syscall. The accumulator holds nr on
// entry; argument loads overwrite it, which is fine: every path out of the
// group returns.
func groupBody(rules []Rule, def Action) ([]unix.SockFilter, error) {
	var body []unix.SockFilter
	for _, r := range rules {
		var rule []unix.SockFilter
		var misses []int // the comparisons whose miss skips the rest of the rule
		for _, a := range r.Args {
			off := uint32(offArgs + 8*a.Index)
			m, v := a.mask(), a.Value
			// x86-64 is little-endian: the low word comes first
			for _, w := range []struct{ off, mask, val uint32 }{
				{off, uint32(m), uint32(v)}, {off + 4, uint32(m >> 32), uint32(v >> 32)},
			} {
				if w.mask == 0 {
					continue // nothing of this word is checked
				}
				rule = append(rule, stmt(ldAbs, w.off))
				if w.mask != ^uint32(0) {
					rule = append(rule, stmt(andK, w.mask))
				}
				misses = append(misses, len(rule))
				rule = append(rule, jump(jeqK, w.val, 0, 0))
			}
		}
		rule = append(rule, stmt(retK, uint32(r.Action)))
		if len(rule) > 256 {
			return nil, errors.New("too many argument checks")
		}
		for _, j := range misses {
			rule[j].Jf = uint8(len(rule) - j - 1)
		}
		body = append(body, rule...)
	}
	return append(body, stmt(retK, uint32(def))), nil
}
