package api

// execs.go owns the exec routes: /exec/create, /exec/start (its stream is
// pumped by streams.go) and /execvm (501), and ParseCommand.

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"

	"github.com/hyperhq/hyperd-go/pod"
	"github.com/hyperhq/hyperd-go/sandbox"
)

// ParseCommand accepts a JSON array or a whitespace-separated command line.
func ParseCommand(s string) ([]string, error) {
	s = strings.TrimSpace(s)
	if strings.HasPrefix(s, "[") {
		var cmd []string
		if err := json.Unmarshal([]byte(s), &cmd); err != nil {
			return nil, badParam("command must be a JSON array of strings: %v", err)
		}
		return cmd, nil
	}
	return strings.Fields(s), nil
}

// execCreate takes container, command and tty from the query, or what is
// missing there from a JSON body {"container": ..., "command": [...], "tty": bool}.
func (s *Server) execCreate(r *http.Request) (any, error) {
	id := q(r, "container", "id")
	cmdStr := q(r, "command")
	tty := boolParam(r, "tty", false)
	var cmd []string
	if id == "" || cmdStr == "" {
		var body struct {
			Container string   `json:"container"`
			Command   []string `json:"command"`
			Tty       bool     `json:"tty"`
		}
		if _, err := optionalJSONBody(r, "exec body", &body); err != nil {
			return nil, err
		}
		if id == "" {
			id = body.Container
		}
		if cmdStr == "" {
			cmd = body.Command
		}
		tty = tty || body.Tty
	}
	if id == "" {
		return nil, badParam("missing query parameter container")
	}
	if cmdStr != "" {
		c, err := ParseCommand(cmdStr)
		if err != nil {
			return nil, err
		}
		cmd = c
	}
	return s.Pods.ExecCreate(id, cmd, tty)
}

func (s *Server) execStart(w http.ResponseWriter, r *http.Request) {
	eid, err := need(r, "exec", "execId")
	if err != nil {
		s.fail(w, r, err)
		return
	}
	cref := q(r, "container", "id")
	tty, err := s.Pods.ContainerTty(cref, eid)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	// The exec runs before the 101 goes out, so a resize right after the
	// upgrade finds it, and a failure gets a proper status.
	ctx, cancel := context.WithCancel(r.Context())
	st, _, err := s.Pods.ExecStart(ctx, cref, eid)
	if err != nil {
		cancel()
		s.fail(w, r, err)
		return
	}
	s.stream(w, r, tty, cancel, func() (sandbox.Stdio, func(), error) {
		return st, func() {}, nil
	})
}

func (s *Server) execVM(r *http.Request) (any, error) {
	if _, err := podRef(r); err != nil {
		return nil, err
	}
	return nil, &pod.NotImplementedError{Msg: "execvm (a command in the sandbox itself, outside any container) is not offered by the agent protocol; use exec in a container"}
}
