// This file owns Driver: any sandbox driver, with every sandbox in its
// pod's network, set up before the sandbox starts and released once it
// ends (stopped, crashed, or found gone after a daemon restart).
package network

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/hyperhq/hyperd-go/sandbox"
)

// Driver wraps a sandbox driver with pod networks.
type Driver struct {
	sandbox.Driver
	M   *Manager
	Log *slog.Logger

	mu   sync.Mutex
	live map[string]bool // pods whose network is being set up or is in use
	// gen counts each pod's networks: a sandbox's watcher releases its
	// pod's network only if no newer one was set up since (a pod
	// restarted after a crash, before the watcher ran)
	gen map[string]uint64
}

// setLive marks a pod's network in use (on) or not; on returns the
// pod's new network generation.
func (d *Driver) setLive(id string, on bool) uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.live == nil {
		d.live, d.gen = map[string]bool{}, map[string]uint64{}
	}
	if on {
		d.live[id] = true
		d.gen[id]++
	} else {
		delete(d.live, id)
	}
	return d.gen[id]
}

// current says whether gen is still the pod's newest network.
func (d *Driver) current(id string, gen uint64) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.gen[id] == gen
}

// handleKey is where a sandbox's Handle carries its network (so a daemon
// that reattaches it knows the pod's address without asking CNI).
const handleKey = "network"

func (d *Driver) log() *slog.Logger {
	if d.Log != nil {
		return d.Log
	}
	return slog.Default()
}

// Create sets up the pod's network, then the sandbox in it.
func (d *Driver) Create(ctx context.Context, cfg sandbox.Config) (sandbox.Sandbox, error) {
	var req sandbox.InterfaceRequest
	if cfg.Interface != nil {
		req = *cfg.Interface
	}
	t0 := time.Now()
	gen := d.setLive(cfg.ID, true)
	n, err := d.M.Setup(ctx, cfg.ID, req)
	if err != nil {
		d.setLive(cfg.ID, false)
		return nil, fmt.Errorf("pod network: %w", err)
	}
	d.log().Info("pod network up", "pod", cfg.ID, "network", n.Name, "addrs", n.Interfaces[0].Addrs, "took", time.Since(t0).Round(time.Millisecond))
	cfg.Network = n
	if started := cfg.Started; started != nil {
		cfg.Started = func(h sandbox.Handle) { started(withNetwork(h, n)) }
	}
	sb, err := d.Driver.Create(ctx, cfg)
	if err != nil {
		if terr := d.M.Teardown(context.WithoutCancel(ctx), cfg.ID); terr != nil {
			d.log().Error("releasing the network of a pod whose sandbox did not start", "pod", cfg.ID, "err", terr)
		}
		d.setLive(cfg.ID, false)
		return nil, err
	}
	return d.watch(sb, cfg.ID, n, gen), nil
}

// Reattach reattaches the sandbox and checks its network (CNI CHECK); a
// sandbox that is gone has its network released.
func (d *Driver) Reattach(ctx context.Context, h sandbox.Handle) (sandbox.Sandbox, error) {
	sb, err := d.Driver.Reattach(ctx, h)
	if err != nil {
		if terr := d.M.Teardown(ctx, h.ID); terr != nil {
			d.log().Error("releasing the network of a pod whose sandbox is gone", "pod", h.ID, "err", terr)
		}
		return nil, err
	}
	var n sandbox.Network
	if s := h.Data[handleKey]; s == "" || json.Unmarshal([]byte(s), &n) != nil {
		// a sandbox from before networking (or a daemon run with
		// networking off): it keeps what it has
		return sb, nil
	}
	gen := d.setLive(h.ID, true)
	if err := d.M.Check(ctx, h.ID); err != nil {
		d.log().Warn("pod network check failed after restart (the pod keeps running)", "pod", h.ID, "err", err)
	}
	return d.watch(sb, h.ID, &n, gen), nil
}

// Collect releases the networks no sandbox of this driver uses (left by
// a daemon killed between a network's setup and its sandbox's handle
// being saved, or by pods deleted while it was down). Call it once the
// daemon has reattached its pods.
func (d *Driver) Collect(ctx context.Context) {
	for _, id := range d.M.Pods() {
		d.mu.Lock()
		live := d.live[id]
		d.mu.Unlock()
		if live {
			continue
		}
		if err := d.M.Teardown(ctx, id); err != nil {
			d.log().Error("releasing a leftover pod network", "pod", id, "err", err)
		} else {
			d.log().Info("released a leftover pod network", "pod", id)
		}
	}
}

func withNetwork(h sandbox.Handle, n *sandbox.Network) sandbox.Handle {
	b, _ := json.Marshal(n)
	data := make(map[string]string, len(h.Data)+1)
	for k, v := range h.Data {
		data[k] = v
	}
	data[handleKey] = string(b)
	h.Data = data
	return h
}

// netSandbox is a sandbox in a pod network.
type netSandbox struct {
	sandbox.Sandbox
	n      *sandbox.Network
	m      *Manager
	podID  string
	closed chan struct{} // the network is released
}

func (d *Driver) watch(sb sandbox.Sandbox, podID string, n *sandbox.Network, gen uint64) *netSandbox {
	s := &netSandbox{Sandbox: sb, n: n, m: d.M, podID: podID, closed: make(chan struct{})}
	go func() {
		<-sb.Done()
		// only if no newer network of the pod was set up since (checked
		// under the manager's lock, which Setup holds too)
		if err := d.M.teardownIf(context.Background(), podID, func() bool { return d.current(podID, gen) }); err != nil {
			d.log().Error("releasing the pod network", "pod", podID, "err", err)
		}
		d.mu.Lock()
		if d.gen[podID] == gen {
			delete(d.live, podID)
		}
		d.mu.Unlock()
		close(s.closed)
	}()
	return s
}

func (s *netSandbox) Handle() sandbox.Handle { return withNetwork(s.Sandbox.Handle(), s.n) }

// Stop stops the sandbox and returns once its network is released too.
func (s *netSandbox) Stop(ctx context.Context) error {
	err := s.Sandbox.Stop(ctx)
	select {
	case <-s.closed:
	case <-ctx.Done():
	}
	return err
}

// Network implements sandbox.Networked.
func (s *netSandbox) Network() *sandbox.Network { return s.n }

// NetCounters implements sandbox.Networked.
func (s *netSandbox) NetCounters() ([]sandbox.NetCounters, error) {
	var out []sandbox.NetCounters
	for _, i := range s.n.Interfaces {
		c, err := s.m.Counters(s.podID, i.Name)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}
