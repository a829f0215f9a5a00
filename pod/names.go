// This file owns the one rule for ids and names that reach host paths
// (pod directories, container log files, volume directories and images):
// letters, digits, '_', '.', '-', starting with a letter or digit, so no
// name is ".", "..", empty, or holds a '/' or a NUL.

package pod

// maxIDLen bounds pod ids, container ids and volume and file names;
// container names follow Docker's 255.
const (
	maxIDLen   = 128
	maxNameLen = 255
)

// checkName returns a *SpecError naming what (e.g. "pod id") unless s
// follows the rule and has at most max bytes.
func checkName(what, s string, max int) error {
	if !nameRe.MatchString(s) || len(s) > max {
		return specErr("bad parameter: invalid %s %q (letters, digits, '_', '.', '-', starting with a letter or digit; at most %d)", what, s, max)
	}
	return nil
}
