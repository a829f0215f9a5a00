// Package seccomp builds and installs classic-BPF seccomp filters in pure
// Go (no libseccomp, no cgo), for x86-64.
//
// A Policy is a default Action and a list of Rules, each naming a syscall
// (a golang.org/x/sys/unix SYS_* number), optional argument equality
// checks, and the Action taken when the syscall and its checks match.
// Build assembles the program; Install sets no_new_privs and loads it on
// every thread of the process (SECCOMP_FILTER_FLAG_TSYNC: a Go program is
// multi-threaded, and a filter on one thread alone would protect nothing).
//
// Every program starts the way the kernel's
// Documentation/userspace-api/seccomp_filter.rst ("Pitfalls") asks: it
// checks seccomp_data.arch against AUDIT_ARCH_X86_64 and kills the process
// on any other ABI, and it kills on x32 syscall numbers (bit 30,
// __X32_SYSCALL_BIT, set), which share the x86-64 arch value and would
// otherwise slip past a deny-list.
package seccomp
