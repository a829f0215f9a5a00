// This file owns the device list of `hyperd vm run`: disks, empty disk
// slots, vsock, taps, net slots and rng for a booted VM, and for a restored
// one the same kinds in the snapshot's order, backed by this VM's files;
// and the SIGUSR1 that snapshots a VM (a template).

package main

import (
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/hyperhq/hyperd-go/virtio"
	"github.com/hyperhq/hyperd-go/vmm"
)

// deviceSpecs are the device flags of `hyperd vm run`.
type deviceSpecs struct {
	disks     []string // path[,ro|rw]
	diskSlots int
	vsock     string // hybrid vsock socket, "" for none
	cid       uint64
	nets      []netSpec
	netSlots  int
	rng       bool
}

// maxSlots bounds --disk-slots and --net-slots (the I/O APIC has 24 pins).
const maxSlots = 16

func closeDevices(devs []virtio.Device) {
	for _, d := range devs {
		if c, ok := d.(io.Closer); ok {
			c.Close()
		}
	}
}

// parseDisk splits path[,ro|rw].
func parseDisk(d string) (path string, ro bool, err error) {
	path, opt, _ := strings.Cut(d, ",")
	if opt != "" && opt != "ro" && opt != "rw" {
		return "", false, fmt.Errorf("--disk %q: option must be ro or rw", d)
	}
	return path, opt == "ro", nil
}

// vmDevices creates the devices in bus order: disks and disk slots,
// vsock, nets and net slots, rng. For a restore (snap != nil) the kinds and
// order are the snapshot's: --disk files fill its disk slots in order,
// --net taps its net devices; the rest stay empty.
func vmDevices(sp deviceSpecs, snap *vmm.Snapshot, msgs io.Writer) (devs []virtio.Device, err error) {
	defer func() {
		if err != nil {
			closeDevices(devs)
			devs = nil
		}
	}()
	if sp.diskSlots < 0 || sp.diskSlots > maxSlots || sp.netSlots < 0 || sp.netSlots > maxSlots {
		return nil, fmt.Errorf("--disk-slots and --net-slots take 0 to %d", maxSlots)
	}
	logf := func(format string, args ...any) { fmt.Fprintf(msgs, "hyperd vm run: "+format+"\n", args...) }
	if snap != nil {
		if sp.diskSlots > 0 || sp.netSlots > 0 {
			return nil, fmt.Errorf("--disk-slots and --net-slots come from the snapshot with --restore")
		}
		return restoredDevices(sp, snap, logf)
	}
	for _, d := range sp.disks {
		path, ro, err := parseDisk(d)
		if err != nil {
			return devs, err
		}
		b, err := virtio.OpenBlk(path, ro)
		if err != nil {
			return devs, err
		}
		devs = append(devs, b)
	}
	for range sp.diskSlots {
		devs = append(devs, virtio.NewBlkSlot())
	}
	if sp.vsock != "" {
		v, err := virtio.NewVsock(virtio.VsockConfig{GuestCID: sp.cid, UDS: sp.vsock, Logf: logf})
		if err != nil {
			return devs, err
		}
		devs = append(devs, v)
	}
	for _, n := range sp.nets {
		d, err := openNet(n, logf)
		if err != nil {
			return devs, err
		}
		devs = append(devs, d)
	}
	for range sp.netSlots {
		d, err := virtio.NewNetSlot(virtio.NetConfig{Logf: logf})
		if err != nil {
			return devs, err
		}
		devs = append(devs, d)
	}
	if sp.rng {
		devs = append(devs, virtio.NewRng())
	}
	return devs, nil
}

// restoredDevices builds the snapshot's devices with this VM's backing.
func restoredDevices(sp deviceSpecs, snap *vmm.Snapshot, logf func(string, ...any)) (devs []virtio.Device, err error) {
	disks, nets := sp.disks, sp.nets
	vsocks := 0
	for i, st := range snap.Devices {
		switch st.DeviceID {
		case virtio.DeviceIDBlk:
			b := virtio.NewBlkSlot()
			devs = append(devs, b)
			if len(disks) > 0 {
				path, ro, err := parseDisk(disks[0])
				if err != nil {
					return devs, err
				}
				disks = disks[1:]
				if err := b.Attach(path, ro); err != nil {
					return devs, err
				}
			}
		case virtio.DeviceIDVsock:
			if sp.vsock == "" {
				return devs, fmt.Errorf("the snapshot has a vsock device: give --vsock")
			}
			if vsocks++; vsocks > 1 {
				return devs, fmt.Errorf("the snapshot has more than one vsock device")
			}
			v, err := virtio.NewVsock(virtio.VsockConfig{GuestCID: sp.cid, UDS: sp.vsock, Logf: logf})
			if err != nil {
				return devs, err
			}
			devs = append(devs, v)
		case virtio.DeviceIDNet:
			d, err := virtio.NewNetSlot(virtio.NetConfig{Logf: logf})
			if err != nil {
				return devs, err
			}
			devs = append(devs, d)
			if len(nets) > 0 {
				n := nets[0]
				nets = nets[1:]
				tp, err := openTap(n)
				if err != nil {
					return devs, err
				}
				if err := d.Attach(tp); err != nil {
					tp.Close()
					return devs, fmt.Errorf("--net: %w", err)
				}
			}
		case virtio.DeviceIDRng:
			devs = append(devs, virtio.NewRng())
		default:
			return devs, fmt.Errorf("snapshot device %d is of type %d, which vm run cannot restore", i, st.DeviceID)
		}
	}
	if len(disks) > 0 || len(nets) > 0 {
		return devs, fmt.Errorf("%d --disk and %d --net left over: the snapshot has no slots for them", len(disks), len(nets))
	}
	return devs, nil
}

// watchSnapshotSignal makes SIGUSR1 snapshot the machine into dir and stop
// it (exit status 8), or stop it with the error (6) if that fails.
func watchSnapshotSignal(m *vmm.Machine, dir string, msgs io.Writer) {
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	go func() {
		select {
		case <-usr1:
		case <-m.Done():
			return
		}
		start := time.Now()
		if err := m.SnapshotAndStop(dir, 10*time.Second); err != nil {
			fmt.Fprintln(msgs, "hyperd vm run: snapshot:", err)
			return
		}
		fmt.Fprintf(msgs, "hyperd vm run: snapshot written to %s in %v\n", dir, time.Since(start).Round(time.Millisecond))
	}()
}
