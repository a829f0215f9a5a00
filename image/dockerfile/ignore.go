package dockerfile

import (
	"bufio"
	"fmt"
	"io"
	"path"
	"regexp"
	"strings"
)

// Ignore is a parsed .dockerignore: patterns in Go filepath.Match syntax plus "**"
// (any number of directories), "!" exceptions, last match wins; a pattern that
// matches a directory excludes everything below it.
type Ignore struct {
	rules []ignoreRule
}

type ignoreRule struct {
	re     *regexp.Regexp
	negate bool
}

// ParseIgnore reads a .dockerignore file.
func ParseIgnore(r io.Reader) (*Ignore, error) {
	ig := &Ignore{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		neg := strings.HasPrefix(line, "!")
		if neg {
			line = strings.TrimSpace(line[1:])
		}
		p := path.Clean("/" + line)[1:]
		if p == "" {
			continue
		}
		re, err := patternRegexp(p)
		if err != nil {
			return nil, fmt.Errorf(".dockerignore: %q: %w", line, err)
		}
		ig.rules = append(ig.rules, ignoreRule{re, neg})
	}
	return ig, sc.Err()
}

func patternRegexp(p string) (*regexp.Regexp, error) {
	var b strings.Builder
	b.WriteString("^")
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch {
		case c == '*' && i+1 < len(p) && p[i+1] == '*':
			i++
			if i+1 < len(p) && p[i+1] == '/' {
				i++
				b.WriteString("(.*/)?")
			} else {
				b.WriteString(".*")
			}
		case c == '*':
			b.WriteString("[^/]*")
		case c == '?':
			b.WriteString("[^/]")
		case c == '[':
			j := strings.IndexByte(p[i:], ']')
			if j < 0 {
				return nil, fmt.Errorf("unterminated [")
			}
			class := p[i+1 : i+j]
			if strings.HasPrefix(class, "^") {
				class = "^" + regexp.QuoteMeta(class[1:])
			} else {
				class = strings.ReplaceAll(regexp.QuoteMeta(class), `\-`, "-")
			}
			b.WriteString("[" + class + "]")
			i += j
		case c == '\\' && i+1 < len(p):
			i++
			b.WriteString(regexp.QuoteMeta(string(p[i])))
		default:
			b.WriteString(regexp.QuoteMeta(string(c)))
		}
	}
	b.WriteString("$")
	return regexp.Compile(b.String())
}

// Excluded reports whether the context path p (slash-separated, relative) is
// excluded: the last rule matching p or one of its parent directories decides.
func (ig *Ignore) Excluded(p string) bool {
	if ig == nil {
		return false
	}
	p = path.Clean("/" + p)[1:]
	excluded := false
	for _, r := range ig.rules {
		if r.matches(p) {
			excluded = !r.negate
		}
	}
	return excluded
}

func (r ignoreRule) matches(p string) bool {
	for q := p; q != "." && q != ""; q = path.Dir(q) {
		if r.re.MatchString(q) {
			return true
		}
	}
	return false
}

// HasExceptions reports whether any "!" rule exists (then an excluded directory may
// still contain included files).
func (ig *Ignore) HasExceptions() bool {
	if ig == nil {
		return false
	}
	for _, r := range ig.rules {
		if r.negate {
			return true
		}
	}
	return false
}
