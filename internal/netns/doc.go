// Package netns pins network namespaces at paths (a bind mount of a fresh
// namespace's nsfs file, so it lives with no process in it) and runs code
// in them, only on dedicated OS threads that are thrown away afterwards
// (a process started there, e.g. with os/exec, inherits the namespace).
package netns
