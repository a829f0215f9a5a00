package api_test

// commit_test.go tests how /container/commit reads repo and tag (Docker's
// rules: repo may carry its tag, tag= replaces it, a registry port is not a
// tag), through the route down to what the image store is asked for.

import (
	"strings"
	"testing"

	"github.com/hyperhq/hyperd-go/api/client"
)

func TestCommitRepoAndTag(t *testing.T) {
	e := newEnv(t)
	c := ctx(t)
	if _, err := e.c.CreatePod(c, []byte(`{"id":"cm","containers":[{"image":"sleeper","name":"cm"}]}`)); err != nil {
		t.Fatal(err)
	}
	if err := e.c.StartPod(c, "cm"); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, repo, tag string
		wantRepo        string
		wantTag         string // "" : the store's latest
		status          int    // 0: committed
		contains        string
	}{
		{"registry port and tag in repo", "host:5000/ns/name:tag", "", "host:5000/ns/name", "tag", 0, ""},
		{"registry port, no tag", "host:5000/ns/name", "", "host:5000/ns/name", "", 0, ""},
		{"localhost port, no tag", "localhost:5000/x", "", "localhost:5000/x", "", 0, ""},
		{"tag parameter replaces repo's", "host:5000/ns/name:v1", "v2", "host:5000/ns/name", "v2", 0, ""},
		{"tag parameter", "host:5000/ns/name", "v2", "host:5000/ns/name", "v2", 0, ""},
		{"docker hub short name with tag", "busybox:1.36", "", "busybox", "1.36", 0, ""},
		{"plain", "myrepo", "", "myrepo", "", 0, ""},
		{"no name", "", "", "", "", 0, ""},
		{"digest", "host:5000/x@sha256:" + strings.Repeat("a", 64), "", "", "", 400, "digest"},
		{"upper case repo", "Host:5000/Bad", "", "", "", 400, "bad parameter: repo"},
		{"empty name before tag", ":v1", "", "", "", 400, "bad parameter: repo"},
		{"bad tag in repo", "host:5000/ns/name:bad!", "", "", "", 400, "bad parameter: tag"},
		{"bad tag parameter", "myrepo", "a:b", "", "", 400, "bad parameter: tag"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := len(e.imgs.Commits)
			_, err := e.c.Commit(c, "cm", tc.repo, tc.tag, "", "", nil)
			if tc.status != 0 {
				if client.StatusOf(err) != tc.status || !strings.Contains(err.Error(), tc.contains) {
					t.Fatalf("got %v, want %d with %q", err, tc.status, tc.contains)
				}
				if len(e.imgs.Commits) != before {
					t.Fatalf("the store was asked to commit %+v", e.imgs.Commits[before:])
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(e.imgs.Commits) != before+1 {
				t.Fatalf("commits %d, want %d", len(e.imgs.Commits), before+1)
			}
			got := e.imgs.Commits[before]
			if got.Repo != tc.wantRepo || got.Tag != tc.wantTag {
				t.Fatalf("store got repo %q tag %q, want %q %q", got.Repo, got.Tag, tc.wantRepo, tc.wantTag)
			}
		})
	}
}
