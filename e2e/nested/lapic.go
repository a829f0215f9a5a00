// This file owns telling QEMU's lost interrupts from a hung L1 kernel: the
// QMP monitor conversation, L1's local APIC state (HMP "info lapic" per
// vCPU) and the test that proves an emulated CPU failed to take an
// interrupt it had to take.
package nested

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// ErrLostInterrupt is returned (wrapped, and wrapping ErrHung) when L1
// stopped because QEMU's emulated CPU did not run as a CPU does, the same
// in two samples 3 s apart: a vCPU sits in HLT with EFLAGS.IF set while its
// local APIC holds a vector in IRR above its processor priority; or every
// vCPU does with nothing pending and every APIC timer run out
// (stalledIdle); or a vCPU that is not halted executed nothing (every
// register the same, its next instruction no jump to itself: seen in CI,
// one L1 vCPU frozen in __schedule with another spinning on a lock it held).
// No program in L1 can cause that state; it is the emulator's fault
// (observed with QEMU 7.2 and 10.0 TCG, both L1 vCPUs halted for good).
var ErrLostInterrupt = fmt.Errorf("%w: an emulated CPU did not take an interrupt its local APIC holds", ErrHung)

// monitor runs QMP commands on L1's QEMU and returns their answers, HMP
// text as is.
func (l *L1) monitor(cmds ...string) (string, error) {
	c, err := net.DialTimeout("unix", filepath.Join(l.cfg.Dir, "qmp.sock"), 5*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(15 * time.Second))
	dec := json.NewDecoder(c)
	var greeting map[string]any
	if err := dec.Decode(&greeting); err != nil {
		return "", err
	}
	var out strings.Builder
	for _, cmd := range append([]string{`{"execute":"qmp_capabilities"}`}, cmds...) {
		if _, err := io.WriteString(c, cmd+"\n"); err != nil {
			return out.String(), err
		}
		for {
			var m map[string]json.RawMessage
			if err := dec.Decode(&m); err != nil {
				return out.String(), err
			}
			if _, ev := m["event"]; ev {
				continue
			}
			if r, ok := m["return"]; ok {
				var s string
				if json.Unmarshal(r, &s) == nil {
					out.WriteString(s)
				} else if string(r) != "{}" {
					out.Write(r)
					out.WriteString("\n")
				}
			} else {
				out.WriteString(fmt.Sprint(m))
			}
			break
		}
	}
	return out.String(), nil
}

// lapics returns HMP "info lapic" of every L1 vCPU.
func (l *L1) lapics() ([]string, error) {
	var all []string
	for i := 0; i < l.cfg.CPUs; i++ {
		s, err := l.monitor(fmt.Sprintf(`{"execute":"human-monitor-command","arguments":{"command-line":"info lapic","cpu-index":%d}}`, i))
		if err != nil {
			return all, err
		}
		all = append(all, s)
	}
	return all, nil
}

// lostInterrupts samples L1's vCPUs and local APICs twice, 3 s apart, and
// returns the APIC dumps and, when some vCPU provably lost an interrupt (see
// ErrLostInterrupt), which one and how; "" when none did.
func (l *L1) lostInterrupts() (dump, lost string) {
	before, dump, err := l.sampleCPUs()
	if err != nil {
		return dump, ""
	}
	time.Sleep(3 * time.Second)
	after, dump, err := l.sampleCPUs()
	if err != nil {
		return dump, ""
	}
	seen := map[string]bool{}
	for _, f := range before.findings() {
		seen[f] = true
	}
	for _, f := range after.findings() {
		if seen[f] {
			return dump, f
		}
	}
	prev, now := cpuBlocks(before.regs), cpuBlocks(after.regs)
	for i := range now {
		if i < len(after.cpus) && !after.cpus[i].halted && i < len(prev) && now[i] == prev[i] && !l.selfLoop(i) {
			return dump, fmt.Sprintf("CPU %d, not halted, executed nothing in 3 s (every register the same; no jump-to-self at RIP)", i)
		}
	}
	return dump, ""
}

// cpuSample is one look at L1's vCPUs: HMP "info registers -a", each one's
// halted state and IF, and "info lapic" of each.
type cpuSample struct {
	regs  string
	cpus  []cpuState
	apics []string
}

// sampleCPUs takes a cpuSample; dump is the APIC text, or what failed.
func (l *L1) sampleCPUs() (cpuSample, string, error) {
	regs, err := l.Registers()
	if err != nil {
		return cpuSample{}, fmt.Sprintf("(registers: %v)", err), err
	}
	apics, err := l.lapics()
	dump := strings.Join(apics, "\n")
	if err != nil {
		return cpuSample{}, dump + fmt.Sprintf("\n(info lapic: %v)", err), err
	}
	return cpuSample{regs: regs, cpus: parseCPUs(regs), apics: apics}, dump, nil
}

// findings are the states of one sample that prove a lost interrupt when
// a second sample shows them too: every vCPU stalled idle, or one halted
// with IF=1 over a deliverable vector.
func (c cpuSample) findings() []string {
	var f []string
	if idle := stalledIdle(c.cpus, c.apics); idle != "" {
		f = append(f, idle)
	}
	for i, a := range c.apics {
		if i >= len(c.cpus) || !c.cpus[i].halted || !c.cpus[i].intsOn {
			continue
		}
		if v, ppr, ok := deliverable(a); ok {
			f = append(f, fmt.Sprintf("CPU %d halted with IF=1 while vector %d waits in its IRR above PPR %#x", i, v, ppr))
		}
	}
	return f
}

// stalledIdle reports the other face of a lost interrupt: every vCPU halted
// with IF=1, no vector pending or in service anywhere, and every local APIC
// timer run out (one-shot, current count 0). An expired timer raises its
// vector; had the CPU taken it, the kernel would have armed the next event
// (l1init's heartbeat sleeps 1 s, so there always is one).
func stalledIdle(cpus []cpuState, apics []string) string {
	if len(cpus) == 0 || len(cpus) != len(apics) {
		return ""
	}
	for i, c := range cpus {
		a := apics[i]
		if !c.halted || !c.intsOn || !expired(a) || !strings.Contains(a, "IRR\t (none)") || !strings.Contains(a, "ISR\t (none)") {
			return ""
		}
	}
	return fmt.Sprintf("all %d vCPUs halted with IF=1, nothing pending, every APIC timer expired and none re-armed", len(cpus))
}

var timerRE = regexp.MustCompile(`one-shot .*\n(?:.*\n)*?Timer\s.*initial_count = (\d+) current_count = (\d+)`)

// expired tells whether a one-shot APIC timer was armed and ran out.
func expired(lapic string) bool {
	m := timerRE.FindStringSubmatch(lapic)
	return m != nil && m[1] != "0" && m[2] == "0"
}

type cpuState struct{ halted, intsOn bool }

// QEMU's HMP ends its lines with \r\n
var cpuHeadRE = regexp.MustCompile(`(?m)^CPU#\d+\r?$`)

// cpuBlocks splits HMP "info registers -a" into each vCPU's text.
func cpuBlocks(regs string) []string {
	idx := cpuHeadRE.FindAllStringIndex(regs, -1)
	var b []string
	for i, m := range idx {
		end := len(regs)
		if i+1 < len(idx) {
			end = idx[i+1][0]
		}
		b = append(b, regs[m[0]:end])
	}
	return b
}

// selfLoop tells whether vCPU cpu's next instruction jumps to itself (a
// CPU in such a loop keeps every register while running); true when it
// cannot tell.
func (l *L1) selfLoop(cpu int) bool {
	s, err := l.monitor(fmt.Sprintf(`{"execute":"human-monitor-command","arguments":{"command-line":"x/1i $pc","cpu-index":%d}}`, cpu))
	if err != nil {
		return true
	}
	return isSelfJump(s)
}

var hexByteRE = regexp.MustCompile(`^[0-9a-f]{2}$`)

// isSelfJump reads HMP "x/1i" output ("0xffffffff81a10d9b:  0f 1f 44 00 00
// nopl 0(%rax, %rax)"; QEMU 7.2 shows the bytes, others may not).
func isSelfJump(x string) bool {
	addr, rest, ok := strings.Cut(strings.TrimSpace(x), ":")
	if !ok || !strings.HasPrefix(addr, "0x") {
		return true
	}
	f := strings.Fields(rest)
	for len(f) > 0 && hexByteRE.MatchString(f[0]) {
		f = f[1:]
	}
	if len(f) == 0 {
		return true
	}
	if !strings.HasPrefix(f[0], "j") {
		return false
	}
	return len(f) > 1 && strings.TrimLeft(strings.TrimPrefix(f[1], "0x"), "0") == strings.TrimLeft(strings.TrimPrefix(addr, "0x"), "0")
}

var (
	rflRE = regexp.MustCompile(`RFL=([0-9a-f]+)\b.*\bHLT=([01])`)
	irrRE = regexp.MustCompile(`(?m)^IRR\s+(.*)$`)
	pprRE = regexp.MustCompile(`\bPPR 0x([0-9a-f]+)`)
)

// parseCPUs reads each vCPU's halted state and EFLAGS.IF from HMP "info
// registers -a", in CPU order.
func parseCPUs(regs string) []cpuState {
	var cpus []cpuState
	for _, m := range rflRE.FindAllStringSubmatch(regs, -1) {
		rfl, _ := strconv.ParseUint(m[1], 16, 64)
		cpus = append(cpus, cpuState{halted: m[2] == "1", intsOn: rfl&(1<<9) != 0})
	}
	return cpus
}

// deliverable returns the highest vector in an "info lapic" dump's IRR and
// the PPR when that vector's priority class is above the PPR's (the APIC
// must present it to the CPU: Intel SDM vol. 3A 10.8.3.1, AMD APM vol. 2
// 16.6).
func deliverable(lapic string) (vec int, ppr uint64, ok bool) {
	m := irrRE.FindStringSubmatch(lapic)
	p := pprRE.FindStringSubmatch(lapic)
	if m == nil || p == nil {
		return 0, 0, false
	}
	ppr, err := strconv.ParseUint(p[1], 16, 8)
	if err != nil {
		return 0, 0, false
	}
	vec = -1
	for _, f := range strings.Fields(m[1]) {
		// "236" or "33(level)"
		if i := strings.IndexByte(f, '('); i >= 0 {
			f = f[:i]
		}
		v, err := strconv.Atoi(f)
		if err == nil && v > vec && v < 256 {
			vec = v
		}
	}
	if vec < 0 || uint64(vec)>>4 <= ppr>>4 {
		return 0, 0, false
	}
	return vec, ppr, true
}
