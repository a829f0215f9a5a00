// This file owns VM templates: one snapshot of a booted pod VM whose agent
// answered (no pod set up, no containers) per (kernel, initramfs, hyperd
// binary, vCPUs, memory, command line), kept under TemplateDir, built on
// first use and rebuilt when an input changes. A pod VM is then restored
// from it (`hyperd vm run --restore`): its memory is the template's memory
// file mapped copy-on-write, shared by every VM restored from it, and its
// disks and tap fill the template's empty device slots.

package kvmdrv

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hyperhq/hyperd-go/sandbox"
	"github.com/hyperhq/hyperd-go/vmm"
)

// Template device slots: pods with more disks or interfaces boot cold.
const (
	TemplateDiskSlots = 8
	TemplateNetSlots  = 1
)

// templateRetry is how long a template that failed to build or restore is
// left alone before it is tried again (pods boot cold meanwhile).
const templateRetry = 10 * time.Minute

// templateInputs are what a template was made from; a template whose
// inputs differ from the driver's current ones is stale.
type templateInputs struct {
	Kernel, Initrd, Hyperd string // sha256 of each file
	Format                 int    // vmm.SnapshotVersion
}

// templates is the driver's template cache.
type templates struct {
	mu       sync.Mutex
	building map[string]*templateBuild
	failed   map[string]time.Time
	digests  map[string]fileDigest // path -> digest, by size and mtime
	swept    bool                  // stale templates removed
}

type templateBuild struct {
	done chan struct{}
	err  error
}

type fileDigest struct {
	size  int64
	mtime time.Time
	sum   string
}

func (d *Driver) tmpl() *templates {
	d.tmplOnce.Do(func() {
		d.templates = &templates{building: map[string]*templateBuild{}, failed: map[string]time.Time{}, digests: map[string]fileDigest{}}
	})
	return d.templates
}

// digest returns the sha256 of a file, cached while its size and mtime
// stay the same.
func (t *templates) digest(path string) (string, error) {
	st, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	t.mu.Lock()
	c, ok := t.digests[path]
	t.mu.Unlock()
	if ok && c.size == st.Size() && c.mtime.Equal(st.ModTime()) {
		return c.sum, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	sum := hex.EncodeToString(h.Sum(nil))
	t.mu.Lock()
	t.digests[path] = fileDigest{size: st.Size(), mtime: st.ModTime(), sum: sum}
	t.mu.Unlock()
	return sum, nil
}

// templateFits reports whether a pod's VM can be restored from a template,
// and if not why.
func (d *Driver) templateFits(nDisks, nNets int) (bool, string) {
	switch {
	case d.TemplateDir == "":
		return false, "templates are off"
	case nDisks > TemplateDiskSlots:
		return false, fmt.Sprintf("%d disks, a template has %d slots", nDisks, TemplateDiskSlots)
	case nNets > TemplateNetSlots:
		return false, fmt.Sprintf("%d interfaces, a template has %d", nNets, TemplateNetSlots)
	}
	return true, ""
}

// template returns the directory of the template for vcpu and mem,
// building it if there is none. key names it (for templateFailed).
func (d *Driver) template(ctx context.Context, bin string, vcpu, mem int, cmdline string) (dir, key string, err error) {
	t := d.tmpl()
	in := templateInputs{Format: vmm.SnapshotVersion}
	for _, f := range []struct {
		path string
		sum  *string
	}{{d.Kernel, &in.Kernel}, {d.Initrd, &in.Initrd}, {bin, &in.Hyperd}} {
		if *f.sum, err = t.digest(f.path); err != nil {
			return "", "", fmt.Errorf("template input: %w", err)
		}
	}
	key = templateKey(in, vcpu, mem, cmdline)
	dir = filepath.Join(d.TemplateDir, key)
	if err := os.MkdirAll(d.TemplateDir, 0o700); err != nil {
		return "", key, err
	}
	t.mu.Lock()
	if !t.swept {
		t.swept = true
		d.sweepTemplates(in)
	}
	if at, ok := t.failed[key]; ok && time.Since(at) < templateRetry {
		t.mu.Unlock()
		return "", key, fmt.Errorf("template %s failed %v ago; pods boot cold until %v have passed", key, time.Since(at).Round(time.Second), templateRetry)
	}
	if _, err := os.Stat(filepath.Join(dir, vmm.SnapshotStateFile)); err == nil {
		t.mu.Unlock()
		return dir, key, nil
	}
	b, ok := t.building[key]
	if !ok {
		b = &templateBuild{done: make(chan struct{})}
		t.building[key] = b
		go func() {
			// not tied to the first pod's ctx: other pods wait for it too
			bctx, cancel := context.WithTimeout(context.Background(), 2*d.bootTimeout()+30*time.Second)
			defer cancel()
			b.err = d.buildTemplate(bctx, bin, dir, in, vcpu, mem, cmdline)
			t.mu.Lock()
			delete(t.building, key)
			if b.err != nil {
				t.failed[key] = time.Now()
			}
			t.mu.Unlock()
			close(b.done)
		}()
	}
	t.mu.Unlock()
	select {
	case <-b.done:
	case <-ctx.Done():
		return "", key, ctx.Err()
	}
	if b.err != nil {
		return "", key, b.err
	}
	return dir, key, nil
}

// templateKey names the template of a size made from in with cmdline.
func templateKey(in templateInputs, vcpu, mem int, cmdline string) string {
	h := sha256.New()
	json.NewEncoder(h).Encode(in)
	fmt.Fprintf(h, "vcpu=%d mem=%d disks=%d nets=%d cmdline=%q\n", vcpu, mem, TemplateDiskSlots, TemplateNetSlots, cmdline)
	return fmt.Sprintf("%dc-%dm-%s", vcpu, mem, hex.EncodeToString(h.Sum(nil))[:16])
}

// templateFailed marks a template that did not restore: it is removed
// (rebuilt after templateRetry) and pods boot cold meanwhile.
func (d *Driver) templateFailed(key string) {
	t := d.tmpl()
	t.mu.Lock()
	t.failed[key] = time.Now()
	t.mu.Unlock()
	os.RemoveAll(filepath.Join(d.TemplateDir, key))
}

// sweepTemplates removes templates made from other inputs (a changed
// kernel, initramfs or hyperd) and unfinished builds of a previous daemon.
// VMs restored from them keep their memory: the mapping holds the file.
func (d *Driver) sweepTemplates(cur templateInputs) {
	ents, err := os.ReadDir(d.TemplateDir)
	if err != nil {
		return
	}
	for _, e := range ents {
		p := filepath.Join(d.TemplateDir, e.Name())
		if strings.HasPrefix(e.Name(), ".build-") {
			os.RemoveAll(p)
			continue
		}
		var in templateInputs
		b, err := os.ReadFile(filepath.Join(p, "inputs.json"))
		if err != nil || json.Unmarshal(b, &in) != nil || in != cur {
			d.log().Info("removing a stale VM template", "template", e.Name())
			os.RemoveAll(p)
		}
	}
}

// buildTemplate boots a template VM, waits for its agent, has the VM
// snapshot itself, and moves the snapshot to dir.
func (d *Driver) buildTemplate(ctx context.Context, bin, dir string, in templateInputs, vcpu, mem int, cmdline string) (err error) {
	start := time.Now()
	tmp, err := os.MkdirTemp(d.TemplateDir, ".build-")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			// the error carries the console's tail
			os.RemoveAll(tmp)
		}
	}()
	uds := filepath.Join(tmp, vsockSock)
	readySock := fmt.Sprintf("%s_%d", uds, ReadyPort)
	ready, err := net.Listen("unix", readySock)
	if err != nil {
		return fmt.Errorf("template: ready socket: %w", err)
	}
	defer ready.Close()
	console := filepath.Join(tmp, consoleLog)
	args := []string{"vm", "run", "--kernel", d.Kernel, "--initrd", d.Initrd, "--append", cmdline,
		"--mem", fmt.Sprintf("%dM", mem), "--cpus", strconv.Itoa(vcpu), "--vsock", uds,
		"--disk-slots", strconv.Itoa(TemplateDiskSlots), "--net-slots", strconv.Itoa(TemplateNetSlots),
		"--snapshot-to", tmp, "--console-log", console}
	out, err := os.Create(filepath.Join(tmp, vmmLog))
	if err != nil {
		return err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		out.Close()
		return fmt.Errorf("template: starting the VM process: %w", err)
	}
	out.Close()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	fail := func(err error) error {
		cmd.Process.Kill()
		<-exited
		return fmt.Errorf("template %s: %w; console tail:\n%s", filepath.Base(dir), err, tail(console, 20))
	}
	got := make(chan error, 1)
	go func() {
		c, err := ready.Accept()
		if err == nil {
			c.Close()
		}
		got <- err
	}()
	bctx, cancel := context.WithTimeout(ctx, d.bootTimeout())
	defer cancel()
	select {
	case err := <-got:
		if err != nil {
			return fail(err)
		}
	case err := <-exited:
		return fmt.Errorf("template %s: the VM stopped while booting (%v); console tail:\n%s", filepath.Base(dir), err, tail(console, 20))
	case <-bctx.Done():
		return fail(fmt.Errorf("no ready signal from the agent within %v", d.bootTimeout()))
	}
	// the agent answers: then no pod-specific state is in the guest yet
	a, err := d.dialAgent(bctx, uds)
	if err != nil {
		return fail(err)
	}
	a.Close()
	if err := cmd.Process.Signal(syscall.SIGUSR1); err != nil {
		return fail(err)
	}
	select {
	case err = <-exited:
	case <-ctx.Done():
		return fail(fmt.Errorf("the snapshot was not written in time"))
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != vmm.StopSnapshot.ExitStatus() {
		return fmt.Errorf("template %s: the VM process did not write its snapshot (%v); its output:\n%s", filepath.Base(dir), err, tail(filepath.Join(tmp, vmmLog), 10))
	}
	b, _ := json.Marshal(in)
	if err := os.WriteFile(filepath.Join(tmp, "inputs.json"), b, 0o600); err != nil {
		return err
	}
	for _, f := range []string{uds, readySock} {
		os.Remove(f)
	}
	if err := os.Rename(tmp, dir); err != nil {
		return fmt.Errorf("template: %w", err)
	}
	d.log().Info("VM template built", "template", filepath.Base(dir), "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// bootTimeout is BootTimeout, 30 s by default.
func (d *Driver) bootTimeout() time.Duration {
	if d.BootTimeout > 0 {
		return d.BootTimeout
	}
	return 30 * time.Second
}

// restoreFromTemplate starts the pod's VM from the template for its size
// (built first if there is none): common are the flags it shares with a
// cold boot (sockets, logs, jail, taps, disks).
func (d *Driver) restoreFromTemplate(ctx context.Context, cfg sandbox.Config, bin, cmdline string, common []string, files []*os.File, uds, console string, disks []string, jl *vmJail, vcpu, mem int) (*vmSandbox, error) {
	dir, key, err := d.template(ctx, bin, vcpu, mem, cmdline)
	if err != nil {
		return nil, err
	}
	args := append([]string{"vm", "run", "--restore", dir}, common...)
	s, err := d.boot(ctx, cfg, bin, args, files, uds, console, disks, nil, jl)
	if err != nil {
		if ctx.Err() == nil {
			// kept for whoever looks into it; the cold boot writes anew
			os.Rename(console, console+".template-failed")
			d.templateFailed(key)
		}
		return nil, fmt.Errorf("restoring from template %s: %w", key, err)
	}
	s.boot = "template " + key
	return s, nil
}

// pollAgent connects to the agent of a restored VM: it has been listening
// since the template was made (its ready signal went to the template's
// builder), so the daemon dials until the restored guest answers.
func (d *Driver) pollAgent(ctx context.Context, s *vmSandbox) (sandbox.Agent, error) {
	var last error
	for {
		actx, cancel := context.WithTimeout(ctx, 3*time.Second)
		a, err := d.dialAgent(actx, s.uds)
		cancel()
		if err == nil {
			return a, nil
		}
		last = err
		select {
		case <-s.Done():
			return nil, s.Err()
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: the restored agent did not answer: %v", ctx.Err(), last)
		case <-time.After(5 * time.Millisecond):
		}
	}
}
