// This file owns loading a program into the kernel.

package seccomp

import (
	"fmt"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Install builds the policy and loads it on every thread of the process.
// It first sets no_new_privs, which seccomp(2) requires of a caller without
// CAP_SYS_ADMIN and which keeps execve from granting privileges the filter
// was meant to bound (seccomp_filter.rst, "Usage"). The filter cannot be
// removed afterwards; filters stack.
func (p Policy) Install() error {
	prog, err := p.Build()
	if err != nil {
		return err
	}
	return Load(prog)
}

// Load loads an assembled program with SECCOMP_FILTER_FLAG_TSYNC (every
// thread of the process gets the filter and no_new_privs; the call fails
// and changes nothing if one thread cannot be synchronised, e.g. it has a
// diverging filter: seccomp(2), "SECCOMP_FILTER_FLAG_TSYNC").
func Load(prog []unix.SockFilter) error {
	if len(prog) == 0 || len(prog) > maxInsns {
		return fmt.Errorf("seccomp: program of %d instructions", len(prog))
	}
	// prctl and seccomp act on the calling thread: keep them on one.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("seccomp: PR_SET_NO_NEW_PRIVS: %w", err)
	}
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	r, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, unix.SECCOMP_FILTER_FLAG_TSYNC, uintptr(unsafe.Pointer(&fprog)))
	runtime.KeepAlive(prog)
	if errno != 0 {
		return fmt.Errorf("seccomp: SECCOMP_SET_MODE_FILTER: %w", errno)
	}
	if r != 0 {
		return fmt.Errorf("seccomp: SECCOMP_FILTER_FLAG_TSYNC: thread %d could not take the filter", r)
	}
	return nil
}
