// This file tests the lost-interrupt proof: parsing QEMU's "info registers"
// and "info lapic" dumps (captured from L1s that stopped, 2026-12-01).
package nested

import (
	"strings"
	"testing"
)

const lapicTimerPending = `dumping local APIC state for CPU 0 

LVT0	 0x00010700 active-hi edge  masked                      ExtINT (vec 0)
LVTT	 0x000000ec active-hi edge                 one-shot     Fixed  (vec 236)
Timer	 DCR=0x3 (divide by 16) initial_count = 4243 current_count = 0
SPIV	 0x000001ff APIC enabled, focus=off, spurious vec 255
ISR	 (none)
IRR	 236 

APR 0x00 TPR 0x10 DFR 0x0f LDR 0x01 PPR 0x10
`

func TestDeliverable(t *testing.T) {
	for _, c := range []struct {
		name  string
		dump  string
		vec   int
		fires bool
	}{
		{"timer pending above PPR", lapicTimerPending, 236, true},
		{"nothing pending", `ISR	 (none)
IRR	 (none)
APR 0x00 TPR 0x10 DFR 0x0f LDR 0x01 PPR 0x10`, 0, false},
		{"masked by PPR (in service)", `ISR	 236 
IRR	 233 
APR 0x00 TPR 0x10 DFR 0x0f LDR 0x01 PPR 0xe0`, 0, false},
		{"highest of several, level", `ISR	 (none)
IRR	 33(level) 48 236 
APR 0x00 TPR 0x00 DFR 0x0f LDR 0x01 PPR 0x00`, 236, true},
		{"same class as PPR", `IRR	 37 
APR 0x00 TPR 0x20 PPR 0x20`, 0, false},
		{"no PPR line", "IRR	 236 \n", 0, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			v, _, ok := deliverable(c.dump)
			if ok != c.fires || v != c.vec {
				t.Errorf("deliverable = %d, %v; want %d, %v", v, ok, c.vec, c.fires)
			}
		})
	}
}

func TestParseCPUs(t *testing.T) {
	regs := `{"status": "running", "singlestep": false, "running": true}

CPU#0
RAX=000000000001ad40 RBX=0000000000000000 RCX=0000000000000000 RDX=4000000000000000
RIP=ffffffff81a17a0b RFL=00000246 [---Z-P-] CPL=0 II=0 A20=1 SMM=0 HLT=1
CPU#1
RIP=ffffffff8104766d RFL=00000082 [--S----] CPL=0 II=0 A20=1 SMM=0 HLT=0
`
	got := parseCPUs(regs)
	want := []cpuState{{halted: true, intsOn: true}, {halted: false, intsOn: false}}
	if len(got) != len(want) {
		t.Fatalf("parseCPUs = %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("CPU %d = %+v, want %+v", i, got[i], want[i])
		}
	}
}

func TestStalledIdle(t *testing.T) {
	idle := `LVTT	 0x000000ec active-hi edge                 one-shot     Fixed  (vec 236)
Timer	 DCR=0x3 (divide by 16) initial_count = 4243 current_count = 0
ISR	 (none)
IRR	 (none)
APR 0x00 TPR 0x10 PPR 0x10`
	counting := `LVTT	 0x000000ec active-hi edge                 one-shot     Fixed  (vec 236)
Timer	 DCR=0x3 (divide by 16) initial_count = 4243 current_count = 17
ISR	 (none)
IRR	 (none)
APR 0x00 TPR 0x10 PPR 0x10`
	on := cpuState{halted: true, intsOn: true}
	for _, c := range []struct {
		name  string
		cpus  []cpuState
		apics []string
		want  bool
	}{
		{"all idle, timers expired", []cpuState{on, on}, []string{idle, idle}, true},
		{"a timer still counting", []cpuState{on, on}, []string{idle, counting}, false},
		{"a CPU running", []cpuState{on, {}}, []string{idle, idle}, false},
		{"interrupts off", []cpuState{on, {halted: true}}, []string{idle, idle}, false},
		{"a vector pending", []cpuState{on}, []string{lapicTimerPending}, false},
		{"no dumps", nil, nil, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := stalledIdle(c.cpus, c.apics) != ""; got != c.want {
				t.Errorf("stalledIdle = %v, want %v", got, c.want)
			}
		})
	}
}

func TestFrozenCPUParsing(t *testing.T) {
	regs := "{\"status\": \"running\"}\n\nCPU#0\nRIP=ffffffff81a10d9b RFL=00000046 [---Z-P-] CPL=0 II=0 A20=1 SMM=0 HLT=0\nCR0=80050033\n\nCPU#1\nRIP=ffffffff81a18710 RFL=00000002 [-------] CPL=0 II=0 A20=1 SMM=0 HLT=0\n"
	if b := cpuBlocks(strings.ReplaceAll(regs, "\n", "\r\n")); len(b) != 2 {
		t.Fatalf("cpuBlocks of HMP's \\r\\n lines = %q", b)
	}
	b := cpuBlocks(regs)
	if len(b) != 2 || !strings.HasPrefix(b[0], "CPU#0\nRIP=ffffffff81a10d9b") || !strings.HasPrefix(b[1], "CPU#1\n") || strings.Contains(b[0], "CPU#1") {
		t.Fatalf("cpuBlocks = %q", b)
	}
	for _, c := range []struct {
		x    string
		self bool
	}{
		{"0xffffffff81a10d9b:  nopl     0(%rax, %rax)\n", false},
		{"0xffffffff81000010:  jmp      0xffffffff81000010\n", true},
		{"0xffffffff81000010:  jmp      0xffffffff81000020\n", false},
		{"0xffffffff81000010:  jne      0xffffffff81000010\n", true},
		{"0xffffffff810e2bdf:  48 c1 e8 0a              shrq     $0xa, %rax\r\n", false},
		{"0xffffffff81000010:  eb fe                    jmp      0xffffffff81000010\r\n", true},
		{"0xffffffff81000010:  eb 0e                    jmp      0xffffffff81000020\r\n", false},
		{"garbage", true},
	} {
		if got := isSelfJump(c.x); got != c.self {
			t.Errorf("isSelfJump(%q) = %v, want %v", c.x, got, c.self)
		}
	}
}
