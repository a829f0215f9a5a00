package dockerfile

import (
	"strings"
	"testing"
)

func TestIgnore(t *testing.T) {
	ig, err := ParseIgnore(strings.NewReader("# comment\n*.log\n!keep.log\nbuild/\n**/*.tmp\n/secret\ndocs/**/draft?\n"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path string
		want bool
	}{
		{"a.log", true}, {"keep.log", false}, {"sub/a.log", false}, {"build", true}, {"build/x/y", true},
		{"x.tmp", true}, {"deep/er/x.tmp", true}, {"secret", true}, {"secret/inner", true}, {"secrets", false},
		{"docs/a/b/draft1", true}, {"docs/draft2", true}, {"docs/draftxy", false}, {"main.go", false},
	} {
		if got := ig.Excluded(tc.path); got != tc.want {
			t.Errorf("Excluded(%q) = %v, want %v", tc.path, got, tc.want)
		}
	}
	if !ig.HasExceptions() {
		t.Error("HasExceptions = false")
	}
	if _, err := ParseIgnore(strings.NewReader("[abc\n")); err == nil {
		t.Error("bad pattern accepted")
	}
}
