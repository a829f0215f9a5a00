// This file tests how `hyperd vm run` builds a restored VM's devices from
// a snapshot's device list: kinds and order kept, --disk files filling the
// disk slots in order, and the mismatches it refuses.

package main

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hyperhq/hyperd-go/virtio"
	"github.com/hyperhq/hyperd-go/vmm"
)

func snapOf(ids ...uint32) *vmm.Snapshot {
	s := &vmm.Snapshot{}
	for _, id := range ids {
		var d vmm.DeviceState
		d.DeviceID = id
		s.Devices = append(s.Devices, d)
	}
	return s
}

func TestRestoredDevices(t *testing.T) {
	dir := t.TempDir()
	disk := filepath.Join(dir, "disk")
	if err := os.WriteFile(disk, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	blk, vs, rng := uint32(virtio.DeviceIDBlk), uint32(virtio.DeviceIDVsock), uint32(virtio.DeviceIDRng)
	for _, tc := range []struct {
		name   string
		snap   *vmm.Snapshot
		sp     deviceSpecs
		errHas string
		check  func(t *testing.T, devs []virtio.Device)
	}{
		{name: "slots filled in order", snap: snapOf(blk, blk, vs, rng),
			sp: deviceSpecs{disks: []string{disk + ",ro"}, vsock: filepath.Join(dir, "a.sock"), cid: 3},
			check: func(t *testing.T, devs []virtio.Device) {
				if len(devs) != 4 {
					t.Fatalf("%d devices", len(devs))
				}
				if c := devs[0].(*virtio.Blk).Capacity(); c != (1<<20)/512 {
					t.Errorf("first slot capacity %d, want the disk's", c)
				}
				if c := devs[1].(*virtio.Blk).Capacity(); c != 0 {
					t.Errorf("second slot capacity %d, want an empty slot", c)
				}
				for i, id := range []uint32{blk, blk, vs, rng} {
					if devs[i].DeviceID() != id {
						t.Errorf("device %d is of type %d, want %d", i, devs[i].DeviceID(), id)
					}
				}
			}},
		{name: "more disks than slots", snap: snapOf(blk, vs), sp: deviceSpecs{disks: []string{disk, disk}, vsock: filepath.Join(dir, "b.sock"), cid: 3}, errHas: "left over"},
		{name: "no vsock socket", snap: snapOf(vs), sp: deviceSpecs{}, errHas: "--vsock"},
		{name: "unknown kind", snap: snapOf(42), sp: deviceSpecs{}, errHas: "cannot restore"},
		{name: "slots given", snap: snapOf(blk), sp: deviceSpecs{diskSlots: 2}, errHas: "from the snapshot"},
		{name: "missing disk", snap: snapOf(blk), sp: deviceSpecs{disks: []string{filepath.Join(dir, "nope")}}, errHas: "nope"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			devs, err := vmDevices(tc.sp, tc.snap, io.Discard)
			defer closeDevices(devs)
			if tc.errHas != "" {
				if err == nil || !strings.Contains(err.Error(), tc.errHas) {
					t.Fatalf("error %v, want one about %q", err, tc.errHas)
				}
				if devs != nil {
					t.Error("devices returned with an error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, devs)
		})
	}
}

func TestSnapshotConsole(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "console.log"), []byte("[    0.5] boot line\nSNAP: part\nhyperd vm run: snapshot written\nhyperd vm run: guest stopped: snapshot ({})\n"), 0o600)
	var b strings.Builder
	snapshotConsole(&b, dir)
	got := b.String()
	if !strings.HasPrefix(got, "[    0.5] boot line\nSNAP: part\n") || !strings.Contains(got, "restored from the snapshot") {
		t.Errorf("console of a restored VM starts %q", got)
	}
	if strings.Contains(got, "guest stopped") {
		t.Errorf("the snapshot VM's stop line was copied: %q", got)
	}
	var none strings.Builder
	snapshotConsole(&none, t.TempDir())
	if none.Len() != 0 {
		t.Errorf("a snapshot without a console wrote %q", none.String())
	}
}
