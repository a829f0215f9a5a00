package dockerfile

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"regexp"
	"strings"
)

// Instruction is one parsed Dockerfile instruction.
type Instruction struct {
	Cmd      string   // upper case: FROM, RUN, ...
	Args     []string // see Parse for the per-instruction layout
	JSON     bool     // exec (JSON array) form of RUN, CMD, ENTRYPOINT, COPY, ADD, VOLUME
	Flags    []string // leading --flags (COPY/ADD --chown=...)
	Line     int      // first line, 1-based
	Original string   // the instruction text after joining continuations
	Escape   rune     // escape character in effect
}

// Supported lists the instructions Parse accepts.
var Supported = []string{"FROM", "RUN", "CMD", "ENTRYPOINT", "COPY", "ADD", "ENV", "WORKDIR", "EXPOSE",
	"LABEL", "USER", "ARG", "VOLUME", "STOPSIGNAL", "MAINTAINER"}

var directiveRe = regexp.MustCompile(`^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$`)

// Parse reads a Dockerfile. Args per instruction:
//
//	FROM        image [AS name]          -> [image] or [image, name]
//	RUN/CMD/ENTRYPOINT                   -> shell form: [command line]; JSON: the array
//	COPY/ADD    src... dest              -> sources then dest (Flags holds --chown=...)
//	ENV/LABEL   k=v... or k v            -> alternating key, value
//	ARG         name[=default]...        -> alternating name, default ("" when none; see HasDefault)
//	EXPOSE/VOLUME                        -> the words
//	WORKDIR/USER/STOPSIGNAL/MAINTAINER   -> [value]
func Parse(r io.Reader) ([]Instruction, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	escape := '\\'
	var out []Instruction
	lineNo := 0
	directives := true
	var cur strings.Builder
	start := 0
	flush := func() error {
		text := strings.TrimSpace(cur.String())
		cur.Reset()
		if text == "" {
			return nil
		}
		in, err := parseInstruction(text, escape)
		if err != nil {
			return fmt.Errorf("dockerfile line %d: %w", start, err)
		}
		in.Line = start
		out = append(out, in)
		return nil
	}
	for sc.Scan() {
		lineNo++
		line := strings.TrimRight(sc.Text(), "\r")
		if directives {
			if m := directiveRe.FindStringSubmatch(line); m != nil {
				if strings.EqualFold(m[1], "escape") {
					if m[2] != "\\" && m[2] != "`" {
						return nil, fmt.Errorf("dockerfile line %d: invalid escape token %q (must be \\ or `)", lineNo, m[2])
					}
					escape = rune(m[2][0])
				}
				continue
			}
			directives = false
		}
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#") {
			continue // comments, also inside continuations
		}
		if cur.Len() == 0 {
			if trimmed == "" {
				continue
			}
			start = lineNo
		}
		if strings.HasSuffix(trimmed, string(escape)) {
			cur.WriteString(strings.TrimSuffix(strings.TrimRight(line, " \t"), string(escape)))
			continue
		}
		cur.WriteString(line)
		if err := flush(); err != nil {
			return nil, err
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if err := flush(); err != nil {
		return nil, err
	}
	return out, nil
}

func parseInstruction(text string, escape rune) (Instruction, error) {
	cmd, rest, _ := strings.Cut(text, " ")
	if i := strings.IndexAny(cmd, "\t"); i >= 0 {
		cmd, rest = text[:i], text[i+1:]
	}
	rest = strings.TrimSpace(rest)
	in := Instruction{Cmd: strings.ToUpper(cmd), Original: text, Escape: escape}
	switch in.Cmd {
	case "RUN", "CMD", "ENTRYPOINT":
		if a, ok := jsonArray(rest); ok {
			in.Args, in.JSON = a, true
		} else {
			if rest == "" && in.Cmd == "RUN" {
				return in, fmt.Errorf("RUN needs a command")
			}
			in.Args = []string{rest}
		}
	case "COPY", "ADD":
		for strings.HasPrefix(rest, "--") {
			f, r, _ := strings.Cut(rest, " ")
			in.Flags = append(in.Flags, f)
			rest = strings.TrimSpace(r)
		}
		if a, ok := jsonArray(rest); ok {
			in.Args, in.JSON = a, true
		} else {
			w, err := Words(rest, escape)
			if err != nil {
				return in, err
			}
			in.Args = w
		}
		if len(in.Args) < 2 {
			return in, fmt.Errorf("%s requires at least a source and a destination", in.Cmd)
		}
	case "VOLUME":
		if a, ok := jsonArray(rest); ok {
			in.Args, in.JSON = a, true
			break
		}
		fallthrough
	case "EXPOSE":
		w, err := Words(rest, escape)
		if err != nil {
			return in, err
		}
		in.Args = w
		if len(w) == 0 {
			return in, fmt.Errorf("%s requires at least one argument", in.Cmd)
		}
	case "FROM":
		w, err := Words(rest, escape)
		if err != nil {
			return in, err
		}
		switch {
		case len(w) == 1:
		case len(w) == 3 && strings.EqualFold(w[1], "AS"):
			w = []string{w[0], w[2]}
		default:
			return in, fmt.Errorf("FROM requires one image (optionally AS name), got %q", rest)
		}
		in.Args = w
	case "ENV", "LABEL", "ARG":
		w, err := Words(rest, escape)
		if err != nil {
			return in, err
		}
		if len(w) == 0 {
			return in, fmt.Errorf("%s requires arguments", in.Cmd)
		}
		if in.Cmd != "ARG" && !strings.Contains(w[0], "=") {
			// Legacy form: ENV key value with spaces.
			k, v, _ := strings.Cut(rest, " ")
			if strings.TrimSpace(v) == "" && in.Cmd == "ENV" {
				return in, fmt.Errorf("ENV %s needs a value", k)
			}
			vw, err := Words(strings.TrimSpace(v), escape)
			if err != nil {
				return in, err
			}
			in.Args = []string{k, strings.Join(vw, " ")}
			break
		}
		for _, kv := range w {
			k, v, ok := strings.Cut(kv, "=")
			if k == "" {
				return in, fmt.Errorf("%s: empty name in %q", in.Cmd, kv)
			}
			if !ok {
				if in.Cmd != "ARG" {
					return in, fmt.Errorf("%s: %q is not key=value", in.Cmd, kv)
				}
				v = "\x00" // no default
			}
			in.Args = append(in.Args, k, v)
		}
	case "WORKDIR", "USER", "STOPSIGNAL", "MAINTAINER":
		if rest == "" {
			return in, fmt.Errorf("%s requires an argument", in.Cmd)
		}
		in.Args = []string{rest}
	case "":
		return in, fmt.Errorf("empty instruction")
	default:
		return in, fmt.Errorf("unknown or unsupported instruction %q (supported: %s)", cmd, strings.Join(Supported, ", "))
	}
	return in, nil
}

// HasDefault reports whether an ARG value parsed by Parse carries a default.
func HasDefault(v string) bool { return v != "\x00" }

func jsonArray(s string) ([]string, bool) {
	if !strings.HasPrefix(s, "[") {
		return nil, false
	}
	var a []string
	if err := json.Unmarshal([]byte(s), &a); err != nil {
		return nil, false
	}
	return a, true
}

// Words splits s into words as the Dockerfile does: whitespace separates, single and
// double quotes group (and are removed), the escape character escapes the next one.
// Variables are left as they are; see Expand.
func Words(s string, escape rune) ([]string, error) {
	var out []string
	var w strings.Builder
	inWord := false
	var quote rune
	rs := []rune(s)
	for i := 0; i < len(rs); i++ {
		c := rs[i]
		switch {
		case c == escape && quote != '\'':
			if i+1 < len(rs) {
				i++
				if quote == '"' && rs[i] != '"' && rs[i] != escape && rs[i] != '$' {
					w.WriteRune(c)
				}
				if rs[i] == '$' {
					w.WriteRune(escape) // keep the escape so Expand leaves $ alone
				}
				w.WriteRune(rs[i])
			} else {
				w.WriteRune(c)
			}
			inWord = true
		case quote != 0 && c == quote:
			quote = 0
		case quote != 0:
			w.WriteRune(c)
		case c == '"' || c == '\'':
			quote, inWord = c, true
		case c == ' ' || c == '\t':
			if inWord {
				out = append(out, w.String())
				w.Reset()
				inWord = false
			}
		default:
			w.WriteRune(c)
			inWord = true
		}
	}
	if quote != 0 {
		return nil, fmt.Errorf("unterminated quote in %q", s)
	}
	if inWord {
		out = append(out, w.String())
	}
	return out, nil
}

// Expand substitutes $VAR, ${VAR}, ${VAR:-default} and ${VAR:+alternative} in s using
// lookup; unset variables expand to "". An escaped dollar (escape$) stays literal.
func Expand(s string, escape rune, lookup func(string) (string, bool)) (string, error) {
	var b strings.Builder
	rs := []rune(s)
	for i := 0; i < len(rs); i++ {
		c := rs[i]
		if c == escape && i+1 < len(rs) && rs[i+1] == '$' {
			b.WriteRune('$')
			i++
			continue
		}
		if c != '$' || i+1 == len(rs) {
			b.WriteRune(c)
			continue
		}
		if rs[i+1] == '{' {
			end := -1
			for j := i + 2; j < len(rs); j++ {
				if rs[j] == '}' {
					end = j
					break
				}
			}
			if end < 0 {
				return "", fmt.Errorf("missing '}' in %q", s)
			}
			body := string(rs[i+2 : end])
			name, word, op := body, "", ""
			if k := strings.Index(body, ":"); k >= 0 {
				name, op = body[:k], body[k:]
				if len(op) < 2 || (op[1] != '-' && op[1] != '+') {
					return "", fmt.Errorf("unsupported modifier in ${%s}", body)
				}
				word, op = op[2:], op[:2]
			}
			if !validName(name) {
				return "", fmt.Errorf("bad variable name in ${%s}", body)
			}
			v, ok := lookup(name)
			switch op {
			case ":-":
				if !ok || v == "" {
					v = word
				}
			case ":+":
				if ok && v != "" {
					v = word
				} else {
					v = ""
				}
			}
			b.WriteString(v)
			i = end
			continue
		}
		j := i + 1
		for j < len(rs) && (rs[j] == '_' || rs[j] >= 'a' && rs[j] <= 'z' || rs[j] >= 'A' && rs[j] <= 'Z' || j > i+1 && rs[j] >= '0' && rs[j] <= '9') {
			j++
		}
		if j == i+1 {
			b.WriteRune(c)
			continue
		}
		v, _ := lookup(string(rs[i+1 : j]))
		b.WriteString(v)
		i = j - 1
	}
	return b.String(), nil
}

func validName(n string) bool {
	if n == "" {
		return false
	}
	for i, c := range n {
		if !(c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || i > 0 && c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}
