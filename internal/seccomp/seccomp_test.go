// This file tests the assembled programs by running them on a small
// classic-BPF interpreter over struct seccomp_data.

package seccomp

import (
	"encoding/binary"
	"fmt"
	"testing"

	"golang.org/x/sys/unix"
)

type call struct {
	arch uint32
	nr   uint32
	args [6]uint64
}

// run interprets prog the way the kernel's seccomp does for the few
// instructions Build emits; any other instruction fails the test.
func run(t *testing.T, prog []unix.SockFilter, c call) Action {
	t.Helper()
	var data [64]byte
	binary.LittleEndian.PutUint32(data[offNr:], c.nr)
	binary.LittleEndian.PutUint32(data[offArch:], c.arch)
	for i, a := range c.args {
		binary.LittleEndian.PutUint64(data[offArgs+8*i:], a)
	}
	var acc uint32
	for pc := 0; pc < len(prog); pc++ {
		in := prog[pc]
		switch in.Code {
		case ldAbs:
			if in.K%4 != 0 || in.K+4 > uint32(len(data)) {
				t.Fatalf("pc %d: load at %d", pc, in.K)
			}
			acc = binary.LittleEndian.Uint32(data[in.K:])
		case andK:
			acc &= in.K
		case jeqK, jgeK:
			taken := acc == in.K
			if in.Code == jgeK {
				taken = acc >= in.K
			}
			if taken {
				pc += int(in.Jt)
			} else {
				pc += int(in.Jf)
			}
		case retK:
			return Action(in.K)
		default:
			t.Fatalf("pc %d: unexpected instruction %#x", pc, in.Code)
		}
	}
	t.Fatalf("program ran off its end")
	return 0
}

func TestBuildVerdicts(t *testing.T) {
	const x86 = unix.AUDIT_ARCH_X86_64
	deny := Policy{Default: Allow, Rules: []Rule{
		{Syscall: unix.SYS_KEXEC_LOAD, Action: Errno(unix.EPERM)},
		{Syscall: unix.SYS_GETPPID, Action: KillProcess},
		// socket(AF_INET, ...) refused, socket(AF_UNIX, ...) kills, others allowed
		{Syscall: unix.SYS_SOCKET, Args: []Arg{{0, unix.AF_INET, 0}}, Action: Errno(unix.EACCES)},
		{Syscall: unix.SYS_SOCKET, Args: []Arg{{0, unix.AF_UNIX, 0}}, Action: KillProcess},
		// two checks, one a full 64-bit value
		{Syscall: unix.SYS_IOCTL, Args: []Arg{{1, 0xAE01, 0}, {2, 0x1_0000_0002, 0}}, Action: Errno(unix.ENOTTY)},
	}}
	// a masked check: ioctls of type 0xAE (KVMIO) with a 32-bit request
	masked := Policy{Default: KillProcess, Rules: []Rule{
		{Syscall: unix.SYS_IOCTL, Args: []Arg{{Index: 1, Mask: 0xFFFFFFFF_0000FF00, Value: 0xAE00}}, Action: Allow},
		{Syscall: unix.SYS_IOCTL, Action: Errno(unix.ENOTTY)},
	}}
	allow := Policy{Default: KillProcess, Rules: []Rule{
		{Syscall: unix.SYS_READ, Action: Allow},
		{Syscall: unix.SYS_CLONE, Args: []Arg{{0, 0x50f00, 0}}, Action: Allow},
	}}
	for _, tc := range []struct {
		name string
		p    Policy
		c    call
		want Action
	}{
		{"deny-list default", deny, call{arch: x86, nr: unix.SYS_READ}, Allow},
		{"errno rule", deny, call{arch: x86, nr: unix.SYS_KEXEC_LOAD}, Errno(unix.EPERM)},
		{"kill rule", deny, call{arch: x86, nr: unix.SYS_GETPPID}, KillProcess},
		{"arg rule, first", deny, call{arch: x86, nr: unix.SYS_SOCKET, args: [6]uint64{unix.AF_INET}}, Errno(unix.EACCES)},
		{"arg rule, second", deny, call{arch: x86, nr: unix.SYS_SOCKET, args: [6]uint64{unix.AF_UNIX}}, KillProcess},
		{"arg rules, none match", deny, call{arch: x86, nr: unix.SYS_SOCKET, args: [6]uint64{unix.AF_NETLINK}}, Allow},
		{"high word matters", deny, call{arch: x86, nr: unix.SYS_SOCKET, args: [6]uint64{1<<32 | unix.AF_INET}}, Allow},
		{"two checks match", deny, call{arch: x86, nr: unix.SYS_IOCTL, args: [6]uint64{3, 0xAE01, 0x1_0000_0002}}, Errno(unix.ENOTTY)},
		{"second check low word differs", deny, call{arch: x86, nr: unix.SYS_IOCTL, args: [6]uint64{3, 0xAE01, 0x1_0000_0003}}, Allow},
		{"second check high word differs", deny, call{arch: x86, nr: unix.SYS_IOCTL, args: [6]uint64{3, 0xAE01, 0x2}}, Allow},
		{"first check differs", deny, call{arch: x86, nr: unix.SYS_IOCTL, args: [6]uint64{3, 0xAE02, 0x1_0000_0002}}, Allow},
		{"other arch killed", deny, call{arch: unix.AUDIT_ARCH_I386, nr: unix.SYS_READ}, KillProcess},
		{"x32 killed", deny, call{arch: x86, nr: X32SyscallBit | unix.SYS_READ}, KillProcess},
		{"allow-list allows", allow, call{arch: x86, nr: unix.SYS_READ}, Allow},
		{"allow-list kills the rest", allow, call{arch: x86, nr: unix.SYS_WRITE}, KillProcess},
		{"thread clone allowed", allow, call{arch: x86, nr: unix.SYS_CLONE, args: [6]uint64{0x50f00}}, Allow},
		{"fork-like clone killed", allow, call{arch: x86, nr: unix.SYS_CLONE, args: [6]uint64{uint64(unix.SIGCHLD)}}, KillProcess},
		{"masked: KVM_RUN", masked, call{arch: x86, nr: unix.SYS_IOCTL, args: [6]uint64{5, 0xAE80}}, Allow},
		{"masked: KVM_SET_REGS", masked, call{arch: x86, nr: unix.SYS_IOCTL, args: [6]uint64{5, 0x4090AE82}}, Allow},
		{"masked: TIOCSTI", masked, call{arch: x86, nr: unix.SYS_IOCTL, args: [6]uint64{0, unix.TIOCSTI}}, Errno(unix.ENOTTY)},
		{"masked: high bits set", masked, call{arch: x86, nr: unix.SYS_IOCTL, args: [6]uint64{5, 1<<40 | 0xAE80}}, Errno(unix.ENOTTY)},
		{"empty policy", Policy{Default: Errno(unix.ENOSYS)}, call{arch: x86, nr: unix.SYS_READ}, Errno(unix.ENOSYS)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			prog, err := tc.p.Build()
			if err != nil {
				t.Fatal(err)
			}
			if got := run(t, prog, tc.c); got != tc.want {
				t.Errorf("verdict %v, want %v", got, tc.want)
			}
		})
	}
}

func TestBuildRejects(t *testing.T) {
	many := make([]Arg, 64)
	var huge []Rule
	for i := range 5000 {
		huge = append(huge, Rule{Syscall: uintptr(i), Action: Allow})
	}
	for _, tc := range []struct {
		name string
		p    Policy
	}{
		{"bad default", Policy{Default: Action(0x12345678)}},
		{"bad rule action", Policy{Default: Allow, Rules: []Rule{{Syscall: 1, Action: Action(0x00030000 + 0x7)}}}},
		{"arg index", Policy{Default: Allow, Rules: []Rule{{Syscall: 1, Args: []Arg{{6, 0, 0}}, Action: Allow}}}},
		{"negative arg index", Policy{Default: Allow, Rules: []Rule{{Syscall: 1, Args: []Arg{{-1, 0, 0}}, Action: Allow}}}},
		{"value outside mask", Policy{Default: Allow, Rules: []Rule{{Syscall: 1, Args: []Arg{{Index: 0, Mask: 0xff, Value: 0x100}}, Action: Allow}}}},
		{"x32 number", Policy{Default: Allow, Rules: []Rule{{Syscall: X32SyscallBit + 1, Action: Allow}}}},
		{"too many checks", Policy{Default: Allow, Rules: []Rule{{Syscall: 1, Args: many, Action: Allow}}}},
		{"too long", Policy{Default: Allow, Rules: huge}},
	} {
		if _, err := tc.p.Build(); err == nil {
			t.Errorf("%s: Build accepted it", tc.name)
		}
	}
}

func TestActionString(t *testing.T) {
	for a, want := range map[Action]string{Allow: "allow", KillProcess: "kill-process", Errno(unix.EPERM): "errno(1)"} {
		if got := fmt.Sprint(a); got != want {
			t.Errorf("%#x prints %q, want %q", uint32(a), got, want)
		}
	}
}
