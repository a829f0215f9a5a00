// This file owns the static keys l1init holds on for L1's whole life, so
// that pod VMs coming and going never make L1's kernel rewrite its code.
//
// A static key's first increment and last decrement patch every site of
// the key (text_poke_bp: an INT3 over the site, sync IPIs, the new bytes,
// IPIs again) while the other CPU may be running that very code. Under
// QEMU's multi-threaded TCG that cross-modification froze L1: one vCPU
// stuck at the key's 5-byte nop, the other in the INT3 handler's entry or
// spinning on a lock the frozen one held, the watchdog printing soft
// lockups until the runner's heartbeat check gave up. CI saw it at
// preempt_notifier_key's site in __schedule (three times), and at
// apic_sw_disabled's sites in kvm's __apic_accept_irq+0x72 (run on
// 1e018df: CPU 1 at that nop, CPU 0 a kworker in error_entry from
// asm_exc_int3, the deferred decrement of the key). A trace of
// arch_jump_label_transform_apply during one e2e kvm suite showed which
// keys a pod VM's life toggles, each a kernel text patch with both vCPUs
// online:
//
//   - preempt_notifier_key: the first KVM VM created and the last one
//     destroyed (virt/kvm/kvm_main.c kvm_create_vm, kvm_destroy_vm);
//   - kvm's apic_sw_disabled, a deferred key (arch/x86/kvm/lapic.c):
//     incremented by every vCPU created (kvm_create_lapic: the local APIC
//     is software-disabled at reset) and by a guest disabling its APIC
//     (apic_set_spiv, as Linux does when it powers off), decremented one
//     second after the guest enables it (jump_label_update_timeout in a
//     kworker), and when the vCPU is freed;
//   - kvm's apic_hw_disabled, the same for the APIC base MSR's enable bit
//     (kvm_lapic_set_base);
//   - kvm's kvm_has_noapic_vcpu: every vCPU of a VM without an in-kernel
//     irqchip (kvm_arch_vcpu_create, kvm_arch_vcpu_destroy), as the kvm,
//     vmm and kvmdrv suites' unit tests make;
//   - memcg_sockets_enabled_key: every non-root memory cgroup on cgroup v2
//     (mm/memcontrol.c mem_cgroup_css_alloc, mem_cgroup_css_free), and
//     hyperd makes one per pod VM;
//   - ingress_needed_key: every ingress qdisc (net/sched/sch_ingress.c,
//     net_inc_ingress_queue), and the kvm driver adds one to each pod's tap
//     and veth.
//
// Holding one reference on each before L1's second vCPU is online (main:
// holdStaticKeys before onlineCPUs) makes the one patch per key happen
// with a single CPU running, and no pod VM or test ever moves a count to
// or from zero again. (Bringing the second vCPU online patches a key too,
// inherently: the new CPU runs nothing else yet.)

package main

import (
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/hyperhq/hyperd-go/kvm"
	"github.com/vishvananda/netlink"
)

// held keeps what holdStaticKeys opened referenced for L1's life (the kvm
// package sets no finalizers, but nothing may ever close these).
var held struct {
	sys          *kvm.System
	vm, noAPICVM *kvm.VM
	vcpu, noAPIC *kvm.VCPU
}

// keysCgroup is the memory cgroup held for memcg_sockets_enabled_key; no
// process ever joins it.
const keysCgroup = "/sys/fs/cgroup/l1init.keys"

// msrAPICBase is IA32_APIC_BASE (Intel SDM vol. 3A 11.4.4, "Local APIC
// Status and Location"): bits 12 and up the base address, bit 11 the
// global enable (clear: the APIC is hardware-disabled), bit 8 BSP.
const (
	msrAPICBase     = 0x1b
	apicDefaultBase = 0xfee00000
)

func holdStaticKeys() {
	holdKVM()
	holdMemcg()
	holdIngress()
	warmOnce()
}

// holdKVM keeps a KVM VM open (preempt_notifier_key) with an in-kernel
// irqchip and one vCPU that never runs: its local APIC stays
// software-disabled (apic_sw_disabled), and its base MSR's enable bit is
// cleared (apic_hw_disabled); and a second VM without an irqchip, with a
// vCPU (kvm_has_noapic_vcpu).
func holdKVM() {
	sys, err := kvm.Open()
	if err != nil {
		logf("hold static keys: %v", err)
		return
	}
	vm, err := sys.CreateVM()
	if err != nil {
		logf("hold static keys: %v", err)
		return
	}
	held.sys, held.vm = sys, vm
	if err := vm.CreateIRQChip(); err != nil {
		logf("hold static keys: %v (preempt_notifier_key held, the APIC keys are not)", err)
		return
	}
	c, err := vm.CreateVCPU(0)
	if err != nil {
		logf("hold static keys: %v (preempt_notifier_key held, the APIC keys are not)", err)
		return
	}
	held.vcpu = c
	if err := c.SetMSRs(kvm.MSREntry{Index: msrAPICBase, Data: apicDefaultBase}); err != nil {
		logf("hold static keys: hardware-disable the held vCPU's APIC: %v (apic_hw_disabled not held)", err)
		return
	}
	logf("holding a KVM VM and a vCPU that never runs for L1's life: preempt_notifier_key, apic_sw_disabled and apic_hw_disabled stay on")
	nv, err := sys.CreateVM()
	if err == nil {
		held.noAPICVM = nv
		held.noAPIC, err = nv.CreateVCPU(0)
	}
	if err != nil {
		logf("hold static keys: a vCPU without an irqchip: %v (kvm_has_noapic_vcpu not held)", err)
		return
	}
	logf("holding a KVM VM without an irqchip and its vCPU for L1's life: kvm_has_noapic_vcpu stays on")
}

// holdMemcg makes a memory cgroup no process joins (the root's
// subtree_control, written by mounts, hands it the memory controller).
func holdMemcg() {
	if err := os.Mkdir(keysCgroup, 0o755); err != nil {
		logf("hold static keys: memory cgroup: %v", err)
		return
	}
	b, _ := os.ReadFile(keysCgroup + "/cgroup.controllers")
	logf("holding cgroup %s (controllers: %s) for L1's life: memcg_sockets_enabled_key stays on", keysCgroup, strings.TrimSpace(string(b)))
}

// holdIngress adds an ingress qdisc to lo, which nothing else uses.
func holdIngress() {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		logf("hold static keys: lo: %v", err)
		return
	}
	qd := &netlink.Ingress{QdiscAttrs: netlink.QdiscAttrs{LinkIndex: lo.Attrs().Index, Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_INGRESS}}
	if err := netlink.QdiscAdd(qd); err != nil {
		logf("hold static keys: ingress qdisc on lo: %v", err)
		return
	}
	logf("holding an ingress qdisc on lo for L1's life: ingress_needed_key stays on")
}

// warmOnce makes the kernel's one-time network secrets now, while one CPU
// runs. Each get_random_once site (net_get_random_once: the TCP, UDP and
// IPv6 hash secrets, the TCP sequence secret ...) is a static key that its
// first use turns off from a kworker (once_deferred): a text patch with
// both CPUs running, once per key per L1, at a test's first connection.
// TCP and UDP over loopback, IPv4 and IPv6, reach the ones the suites do.
func warmOnce() {
	lo, err := netlink.LinkByName("lo")
	if err == nil {
		err = netlink.LinkSetUp(lo)
	}
	if err != nil {
		logf("warm the network's once keys: lo up: %v", err)
		return
	}
	var failed []string
	for _, a := range []struct{ net, addr string }{{"tcp4", "127.0.0.1:0"}, {"tcp6", "[::1]:0"}} {
		if err := tcpRoundTrip(a.net, a.addr); err != nil {
			failed = append(failed, err.Error())
		}
	}
	for _, a := range []struct{ net, addr string }{{"udp4", "127.0.0.1:0"}, {"udp6", "[::1]:0"}} {
		if err := udpRoundTrip(a.net, a.addr); err != nil {
			failed = append(failed, err.Error())
		}
	}
	if len(failed) > 0 {
		logf("warm the network's once keys: %s", strings.Join(failed, "; "))
	}
}

func tcpRoundTrip(network, addr string) error {
	ln, err := net.Listen(network, addr)
	if err != nil {
		return fmt.Errorf("%s: %w", network, err)
	}
	defer ln.Close()
	c, err := net.DialTimeout(network, ln.Addr().String(), 5*time.Second)
	if err != nil {
		return fmt.Errorf("%s: %w", network, err)
	}
	defer c.Close()
	s, err := ln.Accept()
	if err != nil {
		return fmt.Errorf("%s: %w", network, err)
	}
	defer s.Close()
	if _, err := c.Write([]byte{1}); err != nil {
		return fmt.Errorf("%s: %w", network, err)
	}
	s.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := s.Read(make([]byte, 1)); err != nil {
		return fmt.Errorf("%s: %w", network, err)
	}
	return nil
}

func udpRoundTrip(network, addr string) error {
	pc, err := net.ListenPacket(network, addr)
	if err != nil {
		return fmt.Errorf("%s: %w", network, err)
	}
	defer pc.Close()
	if _, err := pc.WriteTo([]byte{1}, pc.LocalAddr()); err != nil {
		return fmt.Errorf("%s: %w", network, err)
	}
	pc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, _, err := pc.ReadFrom(make([]byte, 1)); err != nil {
		return fmt.Errorf("%s: %w", network, err)
	}
	return nil
}
