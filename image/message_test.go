package image

import (
	"encoding/json"
	"testing"
	"time"
)

func TestProgressJSON(t *testing.T) {
	for _, tc := range []struct {
		p    Progress
		want string
	}{
		{Progress{Status: "Pulling from library/busybox", ID: "latest"}, `{"status":"Pulling from library/busybox","id":"latest"}`},
		{Progress{Status: "Downloading", ID: "abc", Progress: "[=>  ] 1B/2B", Current: 1, Total: 2},
			`{"status":"Downloading","id":"abc","progress":"[=\u003e  ] 1B/2B","progressDetail":{"current":1,"total":2}}`},
		{Progress{Error: "boom"}, `{"error":"boom","errorDetail":{"message":"boom"}}`},
	} {
		b, err := json.Marshal(tc.p)
		if err != nil || string(b) != tc.want {
			t.Errorf("got %s %v, want %s", b, err, tc.want)
		}
	}
}

func TestListLines(t *testing.T) {
	im := Image{ID: "sha256:abcd", RepoTags: []string{"127.0.0.1:5000/x:1", "busybox:latest"}, Created: time.Unix(1700000000, 0), Size: 42}
	got := im.ListLines()
	if len(got) != 2 || got[0] != "127.0.0.1:5000/x:1:abcd:1700000000:42" || got[1] != "busybox:latest:abcd:1700000000:42" {
		t.Errorf("%q", got)
	}
	if got := (Image{ID: "sha256:ef", Size: 1}).ListLines(); got[0] != "<none>:<none>:ef:-62135596800:1" {
		t.Errorf("%q", got)
	}
}

func TestBar(t *testing.T) {
	for _, tc := range []struct {
		cur, total int64
		want       string
	}{
		{0, 100, "[>                                                 ]       0B/100B"},
		{50, 100, "[=========================>                        ]      50B/100B"},
		{1500000, 1500000, "[==================================================]    1.5MB/1.5MB"},
		{1234, 0, "1.234kB"},
	} {
		if got := bar(tc.cur, tc.total); got != tc.want {
			t.Errorf("bar(%d,%d) = %q, want %q", tc.cur, tc.total, got, tc.want)
		}
	}
}
