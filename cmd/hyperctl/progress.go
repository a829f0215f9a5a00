package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"golang.org/x/term"

	"github.com/hyperhq/hyperd-go/api"
)

// progressView draws the NDJSON progress of pull, push and build the way
// docker does: one line per layer id, redrawn in place on a terminal (the
// "[=====>    ] 1.2 MB/3.4 MB" bars the daemon sends); without a terminal,
// a layer's line is printed again only when its status changes, so logs
// are not flooded with every byte count.
type progressView struct {
	w      io.Writer
	tty    bool
	ids    []string          // layer ids in the order they appeared
	status map[string]string // last status per id (non-tty dedup)
}

// progress returns the message handler for one pull/push/build.
func (x *cli) progress() func(api.JSONMessage) {
	if x.json {
		enc := json.NewEncoder(x.out)
		return func(m api.JSONMessage) { enc.Encode(m) }
	}
	v := &progressView{w: x.out, status: map[string]string{}}
	if f, ok := x.out.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		v.tty = true
	}
	return v.show
}

func (v *progressView) show(m api.JSONMessage) {
	switch {
	case m.Stream != "":
		fmt.Fprint(v.w, m.Stream)
	case m.ID != "":
		v.layer(m)
	case m.Status != "":
		fmt.Fprintln(v.w, m.Status)
	}
}

func (v *progressView) layer(m api.JSONMessage) {
	line := m.ID + ": " + m.Status
	if m.Progress != "" {
		line += " " + m.Progress
	}
	at := -1
	for i, id := range v.ids {
		if id == m.ID {
			at = i
		}
	}
	if at < 0 {
		v.ids = append(v.ids, m.ID)
		v.status[m.ID] = m.Status
		fmt.Fprintln(v.w, line)
		return
	}
	if !v.tty {
		if v.status[m.ID] != m.Status {
			v.status[m.ID] = m.Status
			fmt.Fprintln(v.w, line)
		}
		return
	}
	// ECMA-48: cursor up n lines (CSI n A), erase the line (CSI 2 K),
	// rewrite it, cursor back down (CSI n B) to below the last layer line.
	up := len(v.ids) - at
	fmt.Fprintf(v.w, "\x1b[%dA\r\x1b[2K%s\r\x1b[%dB", up, line, up)
}
