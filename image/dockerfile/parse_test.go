package dockerfile

import (
	"reflect"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	src := "# syntax comment is a directive-like line we ignore\n" +
		"FROM busybox:1.36 AS base\n" +
		"# a comment\n" +
		"ARG VERSION=1.0\n" +
		"ARG NODEF\n" +
		"ENV A=1 B=\"two words\" C=three\\ words\n" +
		"ENV LEGACY some value here\n" +
		"RUN echo hello && \\\n" +
		"    # comment inside a continuation\n" +
		"    echo world\n" +
		"RUN [\"/bin/sh\", \"-c\", \"echo exec\"]\n" +
		"COPY --chown=1:2 a.txt b.txt /dst/\n" +
		"ADD [\"x y.tar\", \"/opt/\"]\n" +
		"WORKDIR /app\n" +
		"EXPOSE 80/tcp 53/udp\n" +
		"LABEL maintainer=\"me <me@x>\" version=$VERSION\n" +
		"USER nobody\n" +
		"VOLUME [\"/data\"]\n" +
		"VOLUME /a /b\n" +
		"CMD [\"/bin/sh\"]\n" +
		"ENTRYPOINT echo hi\n" +
		"MAINTAINER Jane Doe <jane@example.com>\n" +
		"STOPSIGNAL SIGINT\n" +
		"\n"
	got, err := Parse(strings.NewReader(src))
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		cmd  string
		args []string
		json bool
	}{
		{"FROM", []string{"busybox:1.36", "base"}, false},
		{"ARG", []string{"VERSION", "1.0"}, false},
		{"ARG", []string{"NODEF", "\x00"}, false},
		{"ENV", []string{"A", "1", "B", "two words", "C", "three words"}, false},
		{"ENV", []string{"LEGACY", "some value here"}, false},
		{"RUN", []string{"echo hello &&     echo world"}, false},
		{"RUN", []string{"/bin/sh", "-c", "echo exec"}, true},
		{"COPY", []string{"a.txt", "b.txt", "/dst/"}, false},
		{"ADD", []string{"x y.tar", "/opt/"}, true},
		{"WORKDIR", []string{"/app"}, false},
		{"EXPOSE", []string{"80/tcp", "53/udp"}, false},
		{"LABEL", []string{"maintainer", "me <me@x>", "version", "$VERSION"}, false},
		{"USER", []string{"nobody"}, false},
		{"VOLUME", []string{"/data"}, true},
		{"VOLUME", []string{"/a", "/b"}, false},
		{"CMD", []string{"/bin/sh"}, true},
		{"ENTRYPOINT", []string{"echo hi"}, false},
		{"MAINTAINER", []string{"Jane Doe <jane@example.com>"}, false},
		{"STOPSIGNAL", []string{"SIGINT"}, false},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d instructions, want %d: %+v", len(got), len(want), got)
	}
	for i, w := range want {
		g := got[i]
		if g.Cmd != w.cmd || !reflect.DeepEqual(g.Args, w.args) || g.JSON != w.json {
			t.Errorf("%d: got %s %q json=%v, want %s %q json=%v", i, g.Cmd, g.Args, g.JSON, w.cmd, w.args, w.json)
		}
	}
	if got[7].Flags[0] != "--chown=1:2" || got[5].Line != 8 {
		t.Errorf("flags %v line %d", got[7].Flags, got[5].Line)
	}
}

func TestEscapeDirective(t *testing.T) {
	src := "# escape=`\nFROM scratch\nCOPY c:\\src `\n  c:\\dst\n"
	got, err := Parse(strings.NewReader(src))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || !reflect.DeepEqual(got[1].Args, []string{`c:\src`, `c:\dst`}) || got[1].Escape != '`' {
		t.Errorf("got %+v", got)
	}
}

func TestParseErrors(t *testing.T) {
	for _, src := range []string{
		"FROM a b c\n",
		"FROBNICATE x\n",
		"COPY onlyone\n",
		"ENV\n",
		"ENV K\n",
		"EXPOSE\n",
		"WORKDIR\n",
		"RUN\n",
		"LABEL a\"\n",
		"# escape=x\nFROM a\n",
	} {
		if _, err := Parse(strings.NewReader(src)); err == nil {
			t.Errorf("Parse(%q) succeeded", src)
		}
	}
}

func TestExpand(t *testing.T) {
	vars := map[string]string{"A": "1", "EMPTY": "", "LONG_NAME2": "x"}
	lookup := func(k string) (string, bool) { v, ok := vars[k]; return v, ok }
	for _, tc := range []struct{ in, want string }{
		{"$A", "1"}, {"${A}", "1"}, {"pre${A}post", "pre1post"}, {"$A$A", "11"},
		{"${UNSET:-def}", "def"}, {"${EMPTY:-def}", "def"}, {"${A:-def}", "1"},
		{"${A:+alt}", "alt"}, {"${UNSET:+alt}", ""}, {"$UNSET", ""}, {"$LONG_NAME2/x", "x/x"},
		{`\$A`, "$A"}, {"$", "$"}, {"a$ b", "a$ b"}, {"$1", "$1"},
	} {
		got, err := Expand(tc.in, '\\', lookup)
		if err != nil || got != tc.want {
			t.Errorf("Expand(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"${A", "${A:?x}", "${}", "${1A}"} {
		if _, err := Expand(bad, '\\', lookup); err == nil {
			t.Errorf("Expand(%q) succeeded", bad)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add("FROM busybox\nRUN echo hi\n")
	f.Add("# escape=`\nFROM a\nENV A=\"b c\" D=e`\n f\n")
	f.Add("ARG X=${Y:-z}\nCOPY [\"a\", \"b\"]\nLABEL 'k'='v'\n")
	f.Fuzz(func(t *testing.T, src string) {
		ins, err := Parse(strings.NewReader(src))
		if err != nil {
			return
		}
		for _, in := range ins {
			if in.Cmd == "" || in.Line < 1 {
				t.Fatalf("bad instruction %+v", in)
			}
			for _, a := range in.Args {
				Expand(a, in.Escape, func(string) (string, bool) { return "v", true })
			}
		}
	})
}
