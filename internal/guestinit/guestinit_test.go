// guestinit_test.go tests Console's lines (Say, Fail) with the power-off
// replaced; Start and a real power-off need a guest.
package guestinit

import (
	"bytes"
	"testing"
)

func TestConsoleLines(t *testing.T) {
	cases := []struct {
		name     string
		do       func(c *Console)
		want     string
		poweroff bool
	}{
		{"say", func(c *Console) { c.Say("up iface=%s", "eth0") }, "HYPERD-TEST: up iface=eth0\n", false},
		{"say plain", func(c *Console) { c.Say("done") }, "HYPERD-TEST: done\n", false},
		{"fail", func(c *Console) { c.Fail("tx: %v", "timeout") }, "HYPERD-TEST: FAIL tx: timeout\n", true},
		{"poweroff", func(c *Console) { c.PowerOff() }, "", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			off := false
			c := &Console{W: &buf, Prefix: "HYPERD-TEST", off: func() { off = true }}
			tc.do(c)
			if buf.String() != tc.want || off != tc.poweroff {
				t.Errorf("wrote %q, powered off %v; want %q, %v", buf.String(), off, tc.want, tc.poweroff)
			}
		})
	}
}
