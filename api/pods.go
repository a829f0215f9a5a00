package api

// pods.go owns the pod routes: /pod/create, start, stop, DELETE /pod,
// info, stats, labels, kill, pause/unpause, the port mappings, and /list
// (pods, containers and VMs).

import (
	"encoding/json"
	"net/http"
	"strings"

	"github.com/hyperhq/hyperd-go/pod"
)

func (s *Server) podCreate(r *http.Request) (any, error) {
	data := []byte(q(r, "podArgs"))
	if len(data) == 0 {
		b, err := readBody(r, specLimit)
		if err != nil {
			return nil, err
		}
		data = b
	}
	spec, err := pod.DecodePodSpec(data)
	if err != nil {
		return nil, err
	}
	id, err := s.Pods.CreatePod(spec)
	if err != nil {
		return nil, err
	}
	return PodResult{ID: id}, nil
}

// onPod does a call on the pod named by the request and answers its
// reference as a PodResult.
func (s *Server) onPod(r *http.Request, do func(id string) error) (any, error) {
	id, err := podRef(r)
	if err == nil {
		err = do(id)
	}
	if err != nil {
		return nil, err
	}
	return PodResult{ID: id}, nil
}

func (s *Server) podStart(r *http.Request) (any, error) {
	id, err := podRef(r)
	if err != nil {
		return nil, err
	}
	return struct{}{}, s.Pods.StartPod(r.Context(), id)
}

func (s *Server) podStop(r *http.Request) (any, error) {
	return s.onPod(r, func(id string) error {
		// stopVM=yes (the default) destroys the pod's VM; no keeps it idle
		// for the next start
		switch v := q(r, "stopVM"); strings.ToLower(v) {
		case "", "yes", "true", "1":
			return s.Pods.StopPod(r.Context(), id)
		case "no", "false", "0":
			return s.Pods.StopPodKeepSandbox(r.Context(), id)
		default:
			return badParam("stopVM must be yes or no, not %q", v)
		}
	})
}

func (s *Server) podRemove(r *http.Request) (any, error) {
	return s.onPod(r, func(id string) error { return s.Pods.RemovePod(r.Context(), id) })
}

func (s *Server) podKill(r *http.Request) (any, error) {
	return s.onPod(r, func(id string) error {
		sig, err := sigParam(r)
		if err != nil {
			return err
		}
		return s.Pods.KillPod(r.Context(), id, q(r, "container"), sig)
	})
}

func (s *Server) podPause(pause bool) call {
	return func(r *http.Request) (any, error) {
		return s.onPod(r, func(id string) error { return s.Pods.Pause(id, pause) })
	}
}

func (s *Server) podInfo(r *http.Request) (any, error) {
	id, err := podRef(r)
	if err != nil {
		return nil, err
	}
	return s.Pods.PodInfo(id)
}

func (s *Server) podStats(r *http.Request) (any, error) {
	id, err := podRef(r)
	if err != nil {
		return nil, err
	}
	return s.Pods.Stats(r.Context(), id)
}

func (s *Server) podLabels(r *http.Request) (any, error) {
	id, err := podRef(r)
	if err != nil {
		return nil, err
	}
	const what = "a JSON object of strings"
	labels := map[string]string{}
	found, err := jsonParam(r, "labels", what, &labels)
	if err != nil {
		return nil, err
	}
	if !found {
		b, _ := readBody(r, bodyLimit)
		if err := json.Unmarshal(b, &labels); err != nil {
			return nil, badParam("labels must be %s: %v", what, err)
		}
	}
	pid, err := s.Pods.SetLabels(id, labels, boolParam(r, "override", false))
	if err != nil {
		return nil, err
	}
	return PodResult{ID: pid}, nil
}

func toWirePM(pms []pod.PortMapping) []PortMapping {
	out := []PortMapping{}
	for _, pm := range pms {
		out = append(out, PortMappingOf(pm))
	}
	return out
}

func (s *Server) portMappings(r *http.Request) (any, error) {
	pms, err := s.Pods.PortMappings(r.PathValue("id"))
	if err != nil {
		return nil, err
	}
	return PortMappingList{PortMappings: toWirePM(pms)}, nil
}

func (s *Server) portMappingsUpdate(r *http.Request) (any, error) {
	var pms []pod.PortMapping
	if err := jsonBody(r, "body must be a JSON array of port mappings", &pms); err != nil {
		return nil, err
	}
	switch id, action := r.PathValue("id"), r.PathValue("action"); action {
	case "add":
		return nil, s.Pods.AddPortMappings(id, pms)
	case "delete":
		return nil, s.Pods.DeletePortMappings(id, pms)
	default:
		return nil, badParam("action must be add or delete (got %q)", action)
	}
}

func (s *Server) list(w http.ResponseWriter, r *http.Request) {
	item := q(r, "item")
	pf, vf := q(r, "pod", "podId"), q(r, "vm", "vmId")
	// podData/cData/vmData present even when empty
	out := map[string]any{"item": item}
	switch item {
	case "pod":
		out["podData"] = nonNil(s.Pods.ListPods(pf, vf))
	case "container":
		out["cData"] = nonNil(s.Pods.ListContainers(pf, vf))
	case "vm":
		out["vmData"] = nonNil(s.Pods.ListVMs(pf, vf))
	default:
		s.fail(w, r, badParam("item must be pod, container or vm (got %q)", item))
		return
	}
	writeJSON(w, http.StatusCreated, out)
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
