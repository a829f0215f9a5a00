// This file owns telling QEMU's lost interrupts from a hung L1 kernel: the
// QMP monitor conversation, L1's local APIC state (HMP "info lapic" per
// vCPU) and the test that proves an emulated CPU failed to take an
// interrupt it had to take.
package nested

import (
	"encoding/json"
	"errors"
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
// stopped because QEMU's emulated CPU did not take an interrupt: a vCPU
// sits in HLT with EFLAGS.IF set while its local APIC holds a vector in
// IRR above its processor priority, or every vCPU does with nothing pending
// and every APIC timer run out (stalledIdle); the same in two samples
// seconds apart.
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
	first := map[string]bool{}
	for round := 0; round < 2; round++ {
		if round > 0 {
			time.Sleep(3 * time.Second)
		}
		regs, err := l.Registers()
		if err != nil {
			return fmt.Sprintf("(registers: %v)", err), ""
		}
		apics, err := l.lapics()
		dump = strings.Join(apics, "\n")
		if err != nil {
			return dump + fmt.Sprintf("\n(info lapic: %v)", err), ""
		}
		cpus := parseCPUs(regs)
		var now []string
		if idle := stalledIdle(cpus, apics); idle != "" {
			now = append(now, idle)
		}
		for i, a := range apics {
			if i >= len(cpus) || !cpus[i].halted || !cpus[i].intsOn {
				now = append(now, "")
				continue
			}
			v, ppr, ok := deliverable(a)
			if !ok {
				now = append(now, "")
				continue
			}
			now = append(now, fmt.Sprintf("CPU %d halted with IF=1 while vector %d waits in its IRR above PPR %#x", i, v, ppr))
		}
		for _, f := range now {
			if f == "" {
				continue
			}
			if first[f] {
				return dump, f
			}
			if round == 0 {
				first[f] = true
			}
		}
	}
	return dump, ""
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

// errLost tells whether err is an L1 stop proven to be the emulator's.
func errLost(err error) bool { return errors.Is(err, ErrLostInterrupt) }
