// This file tests the control socket's wire format (control.go): requests
// and answers, well-formed and not, and fuzzes both parsers.

package kvmdrv

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func TestControlRequest(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    ControlRequest
		wantErr string
	}{
		{in: "ATTACH 0 ro abc\n", want: ControlRequest{Slot: 0, ReadOnly: true, ID: "abc"}},
		{in: "ATTACH 7 rw disk-1.img_x\n", want: ControlRequest{Slot: 7, ID: "disk-1.img_x"}},
		{in: "ATTACH 31 rw " + strings.Repeat("f", 20) + "\n", want: ControlRequest{Slot: 31, ID: strings.Repeat("f", 20)}},
		{in: "ATTACH 32 rw a\n", wantErr: "out of range"},
		{in: "ATTACH -1 rw a\n", wantErr: "out of range"},
		{in: "ATTACH +1 rw a\n", wantErr: "not a number"},
		{in: "ATTACH 01 rw a\n", wantErr: "not a number"},
		{in: "ATTACH 99999999999999999999 rw a\n", wantErr: "not a number"},
		{in: "ATTACH 1 RW a\n", wantErr: "mode"},
		{in: "ATTACH 1 rw " + strings.Repeat("f", 21) + "\n", wantErr: "disk id"},
		{in: "ATTACH 1 rw a/b\n", wantErr: "disk id"},
		{in: "ATTACH 1 rw \n", wantErr: "disk id"},
		{in: "ATTACH 1 rw a", wantErr: "newline-terminated"},
		{in: "ATTACH 1 rw a\n\n", wantErr: "one newline-terminated line"},
		{in: "ATTACH 1 rw a\nATTACH 2 rw b\n", wantErr: "one newline-terminated line"},
		{in: "ATTACH  1 rw a\n", wantErr: "want ATTACH"},
		{in: "ATTACH 1 rw a b\n", wantErr: "want ATTACH"},
		{in: "DETACH 1 rw a\n", wantErr: "want ATTACH"},
		{in: "\n", wantErr: "want ATTACH"},
		{in: "", wantErr: "newline-terminated"},
		{in: "ATTACH 1 rw " + strings.Repeat("a", 60) + "\n", wantErr: "at most 64"},
		{in: "ATTACH 1 rw a\x00\n", wantErr: "disk id"},
	} {
		t.Run(strings.TrimSpace(tc.in), func(t *testing.T) {
			got, err := ParseControlRequest([]byte(tc.in))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("ParseControlRequest(%q) = %+v, %v; want an error with %q", tc.in, got, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("ParseControlRequest(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
			}
			b, err := got.Marshal()
			if err != nil || string(b) != tc.in {
				t.Fatalf("Marshal = %q, %v; want %q", b, err, tc.in)
			}
		})
	}
	for _, bad := range []ControlRequest{{Slot: -1, ID: "a"}, {Slot: MaxDiskSlot + 1, ID: "a"}, {ID: ""}, {ID: "a b"}} {
		if _, err := bad.Marshal(); err == nil {
			t.Errorf("Marshal(%+v) succeeded", bad)
		}
	}
}

func TestControlAnswer(t *testing.T) {
	for _, tc := range []struct {
		name    string
		in      string
		slot    int
		wantErr string // "" for OK
	}{
		{name: "ok", in: "OK 3\n", slot: 3},
		{name: "other slot", in: "OK 4\n", slot: 3, wantErr: "answer"},
		{name: "leading zero", in: "OK 03\n", slot: 3, wantErr: "answer"},
		{name: "refused", in: "ERR slot 3 already holds disk x\n", slot: 3, wantErr: "refused: slot 3 already holds disk x"},
		{name: "refusal sanitized", in: "ERR \x1b[31mred\x7f\n", slot: 0, wantErr: "refused: ?[31mred?"},
		{name: "no newline", in: "OK 3", slot: 3, wantErr: "not one line"},
		{name: "two lines", in: "OK 3\nOK 3\n", slot: 3, wantErr: "not one line"},
		{name: "garbage", in: "HELLO\n", slot: 3, wantErr: "answer"},
		{name: "too long", in: "ERR " + strings.Repeat("x", MaxControlAnswer) + "\n", slot: 3, wantErr: "more than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := ParseControlAnswer([]byte(tc.in), tc.slot)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("ParseControlAnswer(%q): %v", tc.in, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("ParseControlAnswer(%q) = %v; want an error with %q", tc.in, err, tc.wantErr)
			}
		})
	}
	// what the VM process writes, the daemon reads back
	if err := ParseControlAnswer(ControlAnswer(5, nil), 5); err != nil {
		t.Errorf("OK round trip: %v", err)
	}
	long := errors.New("bad\nthing " + strings.Repeat("y", 2*MaxControlAnswer))
	a := ControlAnswer(5, long)
	if len(a) > MaxControlAnswer || bytes.Count(a, []byte("\n")) != 1 {
		t.Fatalf("ControlAnswer of a long error: %d bytes, %d newlines", len(a), bytes.Count(a, []byte("\n")))
	}
	if err := ParseControlAnswer(a, 5); err == nil || !strings.Contains(err.Error(), "bad?thing") {
		t.Errorf("ERR round trip: %v", err)
	}
}

func TestDiskID(t *testing.T) {
	a, b := diskID("/var/lib/hyperd/images/a.img"), diskID("/var/lib/hyperd/images/b.img")
	if a == b || !validDiskID(a) || a != diskID("/var/lib/hyperd/images/a.img") {
		t.Fatalf("diskID: %q, %q", a, b)
	}
}

func TestColdDiskSlots(t *testing.T) {
	for _, tc := range []struct{ disks, nets, want int }{
		{0, 0, TemplateDiskSlots},
		{0, 1, TemplateDiskSlots},
		{3, 1, TemplateDiskSlots - 3},
		{TemplateDiskSlots, 1, 0},
		{12, 1, 0},
		{0, 12, maxVMDevices - 12 - 2},
	} {
		got := coldDiskSlots(tc.disks, tc.nets)
		if got != tc.want {
			t.Errorf("coldDiskSlots(%d, %d) = %d, want %d", tc.disks, tc.nets, got, tc.want)
		}
		if tc.disks+got+tc.nets+2 > maxVMDevices && got > 0 {
			t.Errorf("coldDiskSlots(%d, %d) = %d exceeds the device limit", tc.disks, tc.nets, got)
		}
	}
}

// FuzzParseControlRequest: the parser never panics, and what it accepts
// is exactly what Marshal writes for the request it returns.
func FuzzParseControlRequest(f *testing.F) {
	for _, s := range []string{"ATTACH 0 ro abc\n", "ATTACH 31 rw " + strings.Repeat("z", 20) + "\n", "ATTACH 1 rw a", "", "\n", "ATTACH 1 rw a\nx", "ATTACH 007 ro a\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseControlRequest(b)
		if err != nil {
			if r != (ControlRequest{}) && !strings.Contains(err.Error(), "not a number") && !strings.Contains(err.Error(), "mode") {
				t.Fatalf("an error with a partly filled request %+v: %v", r, err)
			}
			return
		}
		out, err := r.Marshal()
		if err != nil || !bytes.Equal(out, b) {
			t.Fatalf("accepted %q but Marshal gives %q, %v", b, out, err)
		}
	})
}

// FuzzParseControlAnswer: the parser never panics and accepts only the
// one canonical OK line.
func FuzzParseControlAnswer(f *testing.F) {
	for _, s := range []string{"OK 0\n", "ERR x\n", "OK 1", "", "OK 00\n"} {
		f.Add([]byte(s), 0)
	}
	f.Fuzz(func(t *testing.T, b []byte, slot int) {
		if ParseControlAnswer(b, slot) == nil && !bytes.Equal(b, ControlAnswer(slot, nil)) {
			t.Fatalf("accepted %q for slot %d", b, slot)
		}
	})
}
