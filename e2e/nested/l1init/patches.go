// This file owns the record of L1's kernel code patches: the function
// tracer on arch_jump_label_transform_apply (every static key switch that
// rewrites kernel text, keys.go says why that matters under TCG), with the
// stack of whoever switched it, read and cleared when a command ends and
// sent in its exit frame.

package main

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

const tracefs = "/sys/kernel/tracing"

// patchTracing is whether the tracer is on (traceCodePatches succeeded).
var patchTracing bool

// traceCodePatches turns the tracer on. Turning it on patches the traced
// function's entry, so it runs before the second vCPU is online (main).
func traceCodePatches() {
	if err := os.MkdirAll(tracefs, 0o755); err == nil {
		if err := unix.Mount("tracefs", tracefs, "tracefs", 0, ""); err != nil {
			logf("trace code patches: mount %s: %v", tracefs, err)
		}
	}
	for _, w := range []struct{ file, val string }{
		{"set_ftrace_filter", "arch_jump_label_transform_apply"},
		{"options/func_stack_trace", "1"},
		{"buffer_size_kb", "256"},
		{"current_tracer", "function"},
	} {
		if err := os.WriteFile(filepath.Join(tracefs, w.file), []byte(w.val+"\n"), 0); err != nil {
			logf("trace code patches: %s: %v (exit frames carry no patch record)", w.file, err)
			return
		}
	}
	patchTracing = true
	logf("tracing kernel code patches (arch_jump_label_transform_apply)")
}

var patchMu sync.Mutex

// maxPatchReport bounds the record sent in one exit frame.
const maxPatchReport = 16 << 10

// takeCodePatches returns the patches traced since the last call (the
// trace's entries, its # header dropped) and clears the trace. With
// commands running at once, the first to end gets them all.
func takeCodePatches() string {
	if !patchTracing {
		return ""
	}
	patchMu.Lock()
	defer patchMu.Unlock()
	p := filepath.Join(tracefs, "trace")
	b, err := os.ReadFile(p)
	if err != nil {
		return "reading " + p + ": " + err.Error()
	}
	// opening the trace file with O_TRUNC clears the buffer
	if f, err := os.OpenFile(p, os.O_WRONLY|os.O_TRUNC, 0); err == nil {
		f.Close()
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		out = append(out, l)
	}
	s := strings.Join(out, "\n")
	if len(s) > maxPatchReport {
		s = s[:maxPatchReport] + "\n[...]"
	}
	return s
}

// settleBootPatches waits for the patches holdStaticKeys or onlineCPUs
// set off (while says which) to be done (get_random_once turns its key off from a kworker, a
// moment after warmOnce), at most 3 s, then clears them from the record:
// they ran with one CPU online, or while the second came up.
func settleBootPatches(while string) {
	if !patchTracing {
		return
	}
	prev := -1
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); {
		b, _ := os.ReadFile(filepath.Join(tracefs, "trace"))
		n := strings.Count(string(b), "arch_jump_label_transform_apply <-")
		if n == prev {
			break
		}
		prev = n
		time.Sleep(250 * time.Millisecond)
	}
	r := takeCodePatches()
	logf("%d kernel code patches %s", strings.Count(r, "arch_jump_label_transform_apply <-"), while)
}
