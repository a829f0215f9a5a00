// This file tests block device slots given an open file (AttachFile): the
// checks on the file and the slot, and what the device reports after.

package virtio

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestBlkAttachFile(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(img, make([]byte, 8*SectorSize+100), 0o600); err != nil {
		t.Fatal(err)
	}
	open := func(flag int) func(t *testing.T) *os.File {
		return func(t *testing.T) *os.File {
			f, err := os.OpenFile(img, flag, 0)
			if err != nil {
				t.Fatal(err)
			}
			return f
		}
	}
	openDir := func(t *testing.T) *os.File {
		f, err := os.Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	for _, tc := range []struct {
		name     string
		dev      func(t *testing.T) *Blk
		file     func(t *testing.T) *os.File
		ro       bool
		id       string
		wantErr  string
		wantCap  uint64
		wantRO   bool
		attached bool
	}{
		{name: "rw", file: open(os.O_RDWR), id: "disk-1", wantCap: 8, attached: true},
		{name: "ro file, ro disk", file: open(os.O_RDONLY), ro: true, id: "d", wantCap: 8, wantRO: true, attached: true},
		{name: "rw file, ro disk", file: open(os.O_RDWR), ro: true, id: "d", wantCap: 8, wantRO: true, attached: true},
		{name: "ro file, rw disk", file: open(os.O_RDONLY), id: "d", wantErr: "open read-only"},
		{name: "directory", file: openDir, ro: true, id: "d", wantErr: "not a regular file"},
		{name: "id too long", file: open(os.O_RDWR), id: strings.Repeat("x", 21), wantErr: "longer than 20"},
		{name: "id of 20 bytes", file: open(os.O_RDWR), id: strings.Repeat("x", 20), wantCap: 8, attached: true},
		{name: "not a slot", dev: func(t *testing.T) *Blk {
			b, err := OpenBlk(img, true)
			if err != nil {
				t.Fatal(err)
			}
			return b
		}, file: open(os.O_RDWR), id: "d", wantErr: "not a slot"},
		{name: "closed slot", dev: func(t *testing.T) *Blk {
			b := NewBlkSlot()
			b.Close()
			return b
		}, file: open(os.O_RDWR), id: "d", wantErr: "closed slot"},
		{name: "full slot", dev: func(t *testing.T) *Blk {
			b := NewBlkSlot()
			if err := b.Attach(img, true); err != nil {
				t.Fatal(err)
			}
			return b
		}, file: open(os.O_RDWR), id: "d", wantErr: "already has"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := NewBlkSlot()
			if tc.dev != nil {
				d = tc.dev(t)
			}
			defer d.Close()
			f := tc.file(t)
			err := d.AttachFile(f, tc.ro, tc.id)
			if tc.wantErr != "" {
				f.Close() // the slot owns it on success only
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("AttachFile: %v, want an error with %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("AttachFile: %v", err)
			}
			id, ro, attached := d.Backing()
			if id != tc.id || ro != tc.wantRO || attached != tc.attached || d.Capacity() != tc.wantCap {
				t.Fatalf("Backing %q ro=%v attached=%v capacity %d; want %q %v %v %d", id, ro, attached, d.Capacity(), tc.id, tc.wantRO, tc.attached, tc.wantCap)
			}
			if d.Features()&BlkFRO != 0 {
				t.Fatal("a slot offers VIRTIO_BLK_F_RO")
			}
		})
	}
	// an empty slot reports nothing attached
	if _, _, attached := NewBlkSlot().Backing(); attached {
		t.Fatal("an empty slot reports a backing")
	}
}
