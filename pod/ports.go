// This file owns port mappings: the host listeners that forward to
// container ports through the agent, checking mappings for conflicts, and
// listing, adding and deleting a pod's mappings.

package pod

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/hyperhq/hyperd-go/sandbox"
)

// forwarder owns the host listeners of one running pod. Every accepted TCP
// connection and every UDP peer gets its own connection to the container
// port through sandbox.Agent.Dial (UDP: udp.go).
type forwarder struct {
	ag  sandbox.Agent
	log *slog.Logger
	// udpMax caps the UDP peers of one mapping (0: maxUDPSessions)
	udpMax int

	mu   sync.Mutex
	lst  map[string]io.Closer // key "proto/hostport"
	done bool
}

func newForwarder(ag sandbox.Agent, log *slog.Logger) *forwarder {
	return &forwarder{ag: ag, log: log, lst: map[string]io.Closer{}}
}

func pairKey(p PortPair) string { return p.Proto + "/" + strconv.Itoa(p.Host) }

// add listens on every pair; on any failure the pairs added by this call are
// closed again and the error says which port.
func (f *forwarder) add(pairs []PortPair) error {
	var added []PortPair
	for _, p := range pairs {
		if err := f.addOne(p); err != nil {
			f.remove(added)
			return err
		}
		added = append(added, p)
	}
	return nil
}

func (f *forwarder) addOne(p PortPair) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.done {
		return fmt.Errorf("pod is stopping")
	}
	k := pairKey(p)
	if _, ok := f.lst[k]; ok {
		return &ConflictError{Msg: fmt.Sprintf("conflict: host port %s is already mapped", k)}
	}
	addr := ":" + strconv.Itoa(p.Host)
	switch p.Proto {
	case "tcp":
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return &ConflictError{Msg: fmt.Sprintf("conflict: cannot listen on host port tcp/%d: %v", p.Host, err)}
		}
		f.lst[k] = l
		go f.serveTCP(l, p)
	case "udp":
		c, err := net.ListenPacket("udp", addr)
		if err != nil {
			return &ConflictError{Msg: fmt.Sprintf("conflict: cannot listen on host port udp/%d: %v", p.Host, err)}
		}
		f.lst[k] = c
		go f.serveUDP(c, p)
	}
	return nil
}

func (f *forwarder) remove(pairs []PortPair) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, p := range pairs {
		k := pairKey(p)
		if c, ok := f.lst[k]; ok {
			c.Close()
			delete(f.lst, k)
		}
	}
}

func (f *forwarder) closeAll() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.done = true
	for k, c := range f.lst {
		c.Close()
		delete(f.lst, k)
	}
}

func (f *forwarder) serveTCP(l net.Listener, p PortPair) {
	var back backoff
	for {
		c, err := l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// EMFILE and the like: the mapping lives on
			f.log.Warn("port mapping: accept", "host", p.Host, "err", err)
			back.wait()
			continue
		}
		back.reset()
		go func() {
			defer c.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			up, err := f.ag.Dial(ctx, "tcp", p.Container)
			cancel()
			if err != nil {
				f.log.Warn("port mapping: dial container port", "host", p.Host, "container", p.Container, "err", err)
				return
			}
			defer up.Close()
			splice(c, up)
		}()
	}
}

type closeWriter interface{ CloseWrite() error }

// splice copies both ways and propagates half-closes.
func splice(a, b net.Conn) {
	var wg sync.WaitGroup
	cp := func(dst, src net.Conn) {
		defer wg.Done()
		io.Copy(dst, src)
		if cw, ok := dst.(closeWriter); ok {
			cw.CloseWrite()
		} else {
			dst.Close()
		}
	}
	wg.Add(2)
	go cp(a, b)
	go cp(b, a)
	wg.Wait()
}

// checkPortConflicts: caller holds d.mu.
func (d *Daemon) checkPortConflicts(podID string, pms []PortMapping) error {
	used := map[string]string{}
	for _, p := range d.pods {
		for _, pm := range p.rec.PortMappings {
			pairs, _ := ExpandPortMapping(pm)
			for _, pp := range pairs {
				used[pairKey(pp)] = p.rec.ID
			}
		}
	}
	mine := map[string]bool{}
	for _, pm := range pms {
		pairs, err := ExpandPortMapping(pm)
		if err != nil {
			return err
		}
		for _, pp := range pairs {
			k := pairKey(pp)
			if owner, ok := used[k]; ok && owner != podID {
				return conflict("conflict: host port %s is already mapped by pod %s", k, owner)
			}
			if mine[k] {
				return conflict("conflict: host port %s is mapped twice", k)
			}
			mine[k] = true
		}
	}
	return nil
}

// PortMappings lists a pod's port mappings.
func (d *Daemon) PortMappings(ref string) ([]PortMapping, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	p, err := d.findPod(ref)
	if err != nil {
		return nil, err
	}
	return append([]PortMapping{}, p.rec.PortMappings...), nil
}

// AddPortMappings adds rules; on a running pod the host ports are opened now.
func (d *Daemon) AddPortMappings(ref string, pms []PortMapping) error {
	var pairs []PortPair
	for i := range pms {
		pp, err := ExpandPortMapping(pms[i])
		if err != nil {
			return err
		}
		pms[i] = normPM(pms[i])
		pairs = append(pairs, pp...)
	}
	return d.withPod(ref, func(p *podState) error {
		d.mu.Lock()
		all := append(append([]PortMapping{}, p.rec.PortMappings...), pms...)
		if err := d.checkPortConflicts(p.rec.ID, all); err != nil {
			d.mu.Unlock()
			return err
		}
		fwd := p.fwd
		d.mu.Unlock()
		if fwd != nil {
			if err := fwd.add(pairs); err != nil {
				return err
			}
		}
		d.mu.Lock()
		p.rec.PortMappings = all
		d.savePod(p)
		d.mu.Unlock()
		return nil
	})
}

// DeletePortMappings removes rules (matched by host port range + protocol).
func (d *Daemon) DeletePortMappings(ref string, pms []PortMapping) error {
	del := map[string]bool{}
	var pairs []PortPair
	for _, pm := range pms {
		pp, err := ExpandPortMapping(pm)
		if err != nil {
			return err
		}
		for _, x := range pp {
			del[pairKey(x)] = true
		}
		pairs = append(pairs, pp...)
	}
	return d.withPod(ref, func(p *podState) error {
		d.mu.Lock()
		var keep []PortMapping
		found := map[string]bool{}
		for _, pm := range p.rec.PortMappings {
			pp, _ := ExpandPortMapping(pm)
			hit := false
			for _, x := range pp {
				if del[pairKey(x)] {
					hit = true
					found[pairKey(x)] = true
				}
			}
			if !hit {
				keep = append(keep, pm)
			}
		}
		for k := range del {
			if !found[k] {
				d.mu.Unlock()
				return notFound("port mapping for host port %s not found in pod %s", k, p.rec.ID)
			}
		}
		var closePairs []PortPair
		for _, pm := range p.rec.PortMappings {
			pp, _ := ExpandPortMapping(pm)
			for _, x := range pp {
				if found[pairKey(x)] {
					closePairs = append(closePairs, pp...)
					break
				}
			}
		}
		p.rec.PortMappings = keep
		fwd := p.fwd
		d.savePod(p)
		d.mu.Unlock()
		if fwd != nil {
			fwd.remove(closePairs)
		}
		return nil
	})
}
