package virtio

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"
)

func blkHdr(typ uint32, sector uint64) []byte {
	b := make([]byte, 16)
	binary.LittleEndian.PutUint32(b, typ)
	binary.LittleEndian.PutUint64(b[8:], sector)
	return b
}

func TestBlk(t *testing.T) {
	const sectors = 16
	img := make([]byte, sectors*SectorSize+100) // trailing partial sector is not exposed
	for i := range img {
		img[i] = byte(i / SectorSize)
	}
	sector := func(n byte) []byte { return bytes.Repeat([]byte{n}, SectorSize) }
	for _, c := range []struct {
		name      string
		ro        bool
		indirect  bool
		segs      []seg
		wantLen   uint32
		wantSt    byte
		wantData  []byte // expected content of segment 1 (IN/GET_ID)
		wantImage func(img []byte) bool
	}{
		{name: "read sector 3", segs: []seg{rseg(blkHdr(BlkTIn, 3)), wseg(SectorSize), wseg(1)}, wantLen: SectorSize + 1, wantData: sector(3)},
		{name: "read indirect", indirect: true, segs: []seg{rseg(blkHdr(BlkTIn, 15)), wseg(SectorSize), wseg(1)}, wantLen: SectorSize + 1, wantData: sector(15)},
		{name: "read data+status in one buffer", segs: []seg{rseg(blkHdr(BlkTIn, 1)), wseg(SectorSize + 1)}, wantLen: SectorSize + 1, wantData: sector(1)},
		{name: "read past end", segs: []seg{rseg(blkHdr(BlkTIn, 15)), wseg(2 * SectorSize), wseg(1)}, wantLen: 1, wantSt: BlkSIOErr},
		{name: "read huge sector", segs: []seg{rseg(blkHdr(BlkTIn, 1<<63)), wseg(SectorSize), wseg(1)}, wantLen: 1, wantSt: BlkSIOErr},
		{name: "read partial sector", segs: []seg{rseg(blkHdr(BlkTIn, 0)), wseg(100), wseg(1)}, wantLen: 1, wantSt: BlkSIOErr},
		{name: "short header", segs: []seg{rseg([]byte{0, 0, 0}), wseg(1)}, wantLen: 1, wantSt: BlkSIOErr},
		{name: "split header", segs: []seg{rseg(blkHdr(BlkTIn, 2)[:5]), rseg(blkHdr(BlkTIn, 2)[5:]), wseg(SectorSize), wseg(1)}, wantLen: SectorSize + 1, wantData: sector(2)},
		{name: "write", segs: []seg{rseg(blkHdr(BlkTOut, 4)), rseg(sector(0xaa)), wseg(1)}, wantLen: 1,
			wantImage: func(img []byte) bool { return bytes.Equal(img[4*SectorSize:5*SectorSize], sector(0xaa)) }},
		{name: "write last sector", segs: []seg{rseg(blkHdr(BlkTOut, 15)), rseg(sector(0xbb)), wseg(1)}, wantLen: 1,
			wantImage: func(img []byte) bool { return bytes.Equal(img[15*SectorSize:16*SectorSize], sector(0xbb)) }},
		{name: "write past end", segs: []seg{rseg(blkHdr(BlkTOut, 16)), rseg(sector(0xcc)), wseg(1)}, wantLen: 1, wantSt: BlkSIOErr,
			wantImage: func(img []byte) bool {
				return bytes.Equal(img[16*SectorSize:], make([]byte, 0)) || img[16*SectorSize] == 16
			}},
		{name: "write read-only", ro: true, segs: []seg{rseg(blkHdr(BlkTOut, 4)), rseg(sector(0xaa)), wseg(1)}, wantLen: 1, wantSt: BlkSIOErr,
			wantImage: func(img []byte) bool { return img[4*SectorSize] == 4 }},
		{name: "read read-only", ro: true, segs: []seg{rseg(blkHdr(BlkTIn, 5)), wseg(SectorSize), wseg(1)}, wantLen: SectorSize + 1, wantData: sector(5)},
		{name: "flush", segs: []seg{rseg(blkHdr(BlkTFlush, 0)), wseg(1)}, wantLen: 1},
		{name: "get id", segs: []seg{rseg(blkHdr(BlkTGetID, 0)), wseg(20), wseg(1)}, wantLen: 21, wantData: append([]byte("disk.img"), make([]byte, 12)...)},
		{name: "unsupported", segs: []seg{rseg(blkHdr(11, 0)), wseg(1)}, wantLen: 1, wantSt: BlkSUnsupp},
		{name: "no status byte", segs: []seg{rseg(blkHdr(BlkTIn, 0))}, wantLen: 0, wantSt: 0xff},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "disk.img")
			if err := os.WriteFile(path, img, 0o600); err != nil {
				t.Fatal(err)
			}
			mem := newTestMemory()
			irq := &countIRQ{}
			tr, blk, err := NewBlkMMIO(mem, irq, path, c.ro)
			if err != nil {
				t.Fatal(err)
			}
			defer blk.Close()
			var cfg [8]byte
			tr.Read(RegConfig, cfg[:])
			if capa := binary.LittleEndian.Uint64(cfg[:]); capa != sectors {
				t.Fatalf("capacity %d", capa)
			}
			d := newDriver(t, mem, tr, irq)
			d.negotiate(^uint64(0), 64)
			d.wr(RegDeviceFeaturesSel, 0)
			if ro := d.rd(RegDeviceFeatures)&BlkFRO != 0; ro != c.ro {
				t.Fatalf("VIRTIO_BLK_F_RO offered = %v", ro)
			}
			ch := d.post(0, c.indirect, c.segs...)
			d.kick(0)
			u := d.takeUsed(0)
			if len(u) != 1 || u[0].id != uint32(ch.head) || u[0].len != c.wantLen {
				t.Fatalf("used %v, want len %d", u, c.wantLen)
			}
			if irq.n.Load() != 1 {
				t.Errorf("%d interrupts", irq.n.Load())
			}
			if c.wantSt != 0xff {
				last := len(c.segs) - 1
				st := d.bytesAt(ch, last, c.segs[last].size())
				if st[len(st)-1] != c.wantSt {
					t.Errorf("status %d, want %d", st[len(st)-1], c.wantSt)
				}
			}
			if c.wantData != nil {
				first := 0
				for !c.segs[first].isW() {
					first++
				}
				if got := d.bytesAt(ch, first, len(c.wantData)); !bytes.Equal(got, c.wantData) {
					t.Errorf("data %x..., want %x...", got[:8], c.wantData[:8])
				}
			}
			if c.wantImage != nil {
				got, _ := os.ReadFile(path)
				if !c.wantImage(got) {
					t.Error("image content wrong")
				}
			}
		})
	}
}

func TestBlkOpenErrors(t *testing.T) {
	if _, err := OpenBlk(filepath.Join(t.TempDir(), "missing"), true); err == nil {
		t.Error("opened a missing file")
	}
	if _, err := OpenBlk(t.TempDir(), true); err == nil {
		t.Error("opened a directory")
	}
}
