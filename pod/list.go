// This file owns the listings: /list of pods, containers and VMs, and the
// counts for /info.

package pod

import (
	"sort"
	"strings"
)

// ListPods returns "<podID>:<podName>:<vmID>:<status>" entries.
func (d *Daemon) ListPods(podFilter, vmFilter string) []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []string
	for _, p := range d.filteredPods(podFilter, vmFilter) {
		out = append(out, strings.Join([]string{p.rec.ID, p.rec.Name, p.rec.VMID, listStatus(p.rec.State)}, ":"))
	}
	return out
}

func listStatus(state string) string {
	switch state {
	case StateStopped:
		return "failed"
	case "":
		return "pending"
	}
	return state
}

// filteredPods are the pods (by creation) matching the /list filters: pod
// id or name, VM id; "" matches all. Caller holds d.mu.
func (d *Daemon) filteredPods(podFilter, vmFilter string) []*podState {
	var out []*podState
	for _, p := range d.sortedPods() {
		if podFilter != "" && p.rec.ID != podFilter && p.rec.Name != podFilter {
			continue
		}
		if vmFilter != "" && p.rec.VMID != vmFilter {
			continue
		}
		out = append(out, p)
	}
	return out
}

func (d *Daemon) sortedPods() []*podState {
	ps := make([]*podState, 0, len(d.pods))
	for _, p := range d.pods {
		ps = append(ps, p)
	}
	sort.Slice(ps, func(i, j int) bool {
		if !ps[i].rec.Created.Equal(ps[j].rec.Created) {
			return ps[i].rec.Created.Before(ps[j].rec.Created)
		}
		return ps[i].rec.ID < ps[j].rec.ID
	})
	return ps
}

// ListContainers returns "<cid>:<name>:<podID>:<status>" entries.
func (d *Daemon) ListContainers(podFilter, vmFilter string) []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []string
	for _, p := range d.filteredPods(podFilter, vmFilter) {
		for _, cid := range p.rec.Containers {
			if c := d.ctrs[cid]; c != nil {
				out = append(out, strings.Join([]string{c.rec.ID, c.rec.Name, p.rec.ID, c.rec.Phase}, ":"))
			}
		}
	}
	return out
}

// ListVMs returns "<vmID>:<podID>:<status>" for pods with a sandbox.
func (d *Daemon) ListVMs(podFilter, vmFilter string) []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []string
	for _, p := range d.filteredPods(podFilter, vmFilter) {
		if p.sb == nil {
			continue
		}
		st := "associated"
		if p.rec.State == StatePaused {
			st = "paused"
		}
		out = append(out, strings.Join([]string{p.rec.VMID, p.rec.ID, st}, ":"))
	}
	return out
}

// Counts for /info.
func (d *Daemon) Counts() (pods, containers, running int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, p := range d.pods {
		if p.rec.State == StateRunning || p.rec.State == StatePaused {
			running++
		}
	}
	return len(d.pods), len(d.ctrs), running
}
