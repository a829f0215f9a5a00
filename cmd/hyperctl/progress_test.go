package main

import (
	"bytes"
	"testing"

	"github.com/hyperhq/hyperd-go/api"
)

func TestProgressView(t *testing.T) {
	msgs := []api.JSONMessage{
		{Status: "Pulling from library/busybox", ID: "latest"},
		{Status: "Pulling fs layer", ID: "aaa"},
		{Status: "Pulling fs layer", ID: "bbb"},
		{Status: "Downloading", ID: "aaa", Progress: "[=>    ] 1 MB/4 MB"},
		{Status: "Downloading", ID: "aaa", Progress: "[===>  ] 3 MB/4 MB"},
		{Status: "Download complete", ID: "aaa"},
		{Status: "Digest: sha256:1"},
		{Stream: "Step 1/2 : FROM x\n"},
	}
	for _, tc := range []struct {
		name string
		tty  bool
		want string
	}{
		{"pipe: a line per status change", false, "latest: Pulling from library/busybox\naaa: Pulling fs layer\nbbb: Pulling fs layer\n" +
			"aaa: Downloading [=>    ] 1 MB/4 MB\naaa: Download complete\nDigest: sha256:1\nStep 1/2 : FROM x\n"},
		{"terminal: redrawn in place", true, "latest: Pulling from library/busybox\naaa: Pulling fs layer\nbbb: Pulling fs layer\n" +
			"\x1b[2A\r\x1b[2Kaaa: Downloading [=>    ] 1 MB/4 MB\r\x1b[2B" +
			"\x1b[2A\r\x1b[2Kaaa: Downloading [===>  ] 3 MB/4 MB\r\x1b[2B" +
			"\x1b[2A\r\x1b[2Kaaa: Download complete\r\x1b[2B" +
			"Digest: sha256:1\nStep 1/2 : FROM x\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b bytes.Buffer
			v := &progressView{w: &b, tty: tc.tty, status: map[string]string{}}
			for _, m := range msgs {
				v.show(m)
			}
			if b.String() != tc.want {
				t.Errorf("got\n%q\nwant\n%q", b.String(), tc.want)
			}
		})
	}
}
