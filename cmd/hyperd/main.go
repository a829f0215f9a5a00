// Command hyperd is the hyperd daemon: it serves the hyperd REST API on a
// unix socket and runs every pod in its own sandbox (a KVM virtual machine,
// or with --driver local the agent in fresh namespaces on the host).
//
// Subcommands (hyperd <name> ...) are registered in the subcommands map by
// other files of this package (e.g. "vm").
package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/hyperhq/hyperd-go/api"
	"github.com/hyperhq/hyperd-go/pod"
)

// version is set with -ldflags "-X main.version=...".
var version = "0.1.0-dev"

// subcommands maps os.Args[1] to a handler returning the exit status.
var subcommands = map[string]func(args []string) int{}

// Options are the daemon's settings (flags, or the --config JSON file with
// the same names as keys).
type Options struct {
	Host              string   `json:"host"`
	DataRoot          string   `json:"data-root"`
	Driver            string   `json:"driver"`
	Kernel            string   `json:"kernel"`
	Initrd            string   `json:"initrd"`
	KernelArgs        string   `json:"kernel-args"`
	VCPU              int      `json:"vcpu"`
	Memory            int      `json:"memory"`
	LogLevel          string   `json:"log-level"`
	LogFormat         string   `json:"log-format"`
	InsecureRegistry  []string `json:"insecure-registries"`
	StopTimeoutSecond int      `json:"stop-timeout"`
	BootTimeoutSecond int      `json:"boot-timeout"`
	BootRetries       int      `json:"boot-retries"`
	VMTemplate        bool     `json:"vm-template"`
	StopPodsOnExit    bool     `json:"stop-pods-on-exit"`
	MaxConnections    int      `json:"max-connections"`
	// LogOpts are the default json-file options of container logs
	// (max-size, max-file), as dockerd's log-opts.
	LogOpts map[string]string `json:"log-opts,omitempty"`
	TLSOptions
	VMMJailOptions
	LocalOptions
	NetworkOptions
	CRIOptions
	MirrorOptions
}

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(s string) error { *l = append(*l, s); return nil }

func main() {
	if len(os.Args) > 1 {
		if f, ok := subcommands[os.Args[1]]; ok {
			os.Exit(f(os.Args[2:]))
		}
	}
	os.Exit(run(os.Args[1:]))
}

func parseOptions(args []string) (Options, error) {
	o := Options{Host: "unix:///var/run/hyper.sock", DataRoot: "/var/lib/hyper", Driver: "auto", VCPU: 1, Memory: 128,
		LogLevel: "info", LogFormat: "text", StopTimeoutSecond: 10, BootTimeoutSecond: 30, VMTemplate: true, MaxConnections: api.DefaultLimits().MaxConns}
	fs := flag.NewFlagSet("hyperd", flag.ContinueOnError)
	var cfgPath string
	var insecure listFlag
	fs.StringVar(&cfgPath, "config", "", "JSON config file (keys: host, data-root, driver, kernel, initrd, kernel-args, vm-template, vcpu, memory, log-level, log-format, insecure-registries, log-opts, stop-timeout, boot-timeout, stop-pods-on-exit, max-connections, local-userns, network, cni-conf-dir, cni-bin-dir, tlscacert, tlscert, tlskey, tlsverify, cri, cri-socket, registry-mirrors); flags override it")
	host := fs.String("host", o.Host, "where to serve the API: unix:///path or tcp://addr:port")
	fs.StringVar(host, "H", o.Host, "shorthand for --host")
	dataRoot := fs.String("data-root", o.DataRoot, "state directory (bbolt state, logs, images)")
	driver := fs.String("driver", o.Driver, "sandbox driver: auto, kvm or local (auto = kvm where the host can boot a guest, else local)")
	kernel := fs.String("kernel", "", "guest kernel (an ELF vmlinux with a PVH entry, or a bzImage) for the kvm driver; default: make kernel's own build/guest/vmlinux, else the Debian cloud kernel build/vmlinux with its modules")
	initrd := fs.String("initrd", "", "guest initramfs for the kvm driver (default: the embedded agent initramfs)")
	kernelArgs := fs.String("kernel-args", "", "kvm: words appended to the pod VMs' kernel command line (after hyperd's own; e.g. loglevel=7 to see the whole boot in a pod's console.log)")
	vcpu := fs.Int("vcpu", o.VCPU, "default vCPUs of a pod's VM")
	mem := fs.Int("memory", o.Memory, "default memory of a pod's VM in MiB")
	logLevel := fs.String("log-level", o.LogLevel, "debug, info, warn or error")
	logFormat := fs.String("log-format", o.LogFormat, "text or json")
	stopTimeout := fs.Int("stop-timeout", o.StopTimeoutSecond, "seconds between the stop signal and SIGKILL")
	bootRetries := fs.Int("boot-retries", o.BootRetries, "kvm: boots of a pod's VM to try again, loudly, when its guest crashes (triple fault, kernel panic) before its agent answers or does not answer within --boot-timeout; 0 on real hardware, where any of these would repeat (the nested test runner's emulated SVM sets 2)")
	vmTemplate := fs.Bool("vm-template", o.VMTemplate, "kvm: start pod VMs by restoring a VM template (a snapshot of a booted VM whose agent answered, one per vCPU/memory size, kept under the data root, built on first use and rebuilt when the kernel, initramfs or hyperd change) instead of booting each; a template that fails falls back to a cold boot, loudly")
	bootTimeout := fs.Int("boot-timeout", o.BootTimeoutSecond, "kvm: seconds a pod's VM has to boot and its agent to answer before the pod fails (with the console tail)")
	stopPods := fs.Bool("stop-pods-on-exit", false, "on SIGTERM/SIGINT stop every running pod and its VM (default: leave them running for the next hyperd to reattach)")
	maxConns := fs.Int("max-connections", o.MaxConnections, "API connections served at once; one more is answered 503 and closed (0: no cap)")
	fs.Var(&insecure, "insecure-registry", "registry HOST:PORT reached over plain HTTP (repeatable)")
	var logOpts listFlag
	fs.Var(&logOpts, "log-opt", "default container log option KEY=VALUE as Docker's json-file: max-size (default 10m), max-file (default 3); a pod's log.config overrides it (repeatable)")
	tlsCA := fs.String("tlscacert", "", "tcp://: the CA whose client certificates --tlsverify accepts")
	tlsCert := fs.String("tlscert", "", "tcp://: the server's TLS certificate (PEM)")
	tlsKey := fs.String("tlskey", "", "tcp://: the server's TLS key (PEM)")
	tlsVerify := fs.Bool("tlsverify", false, "tcp://: serve TLS and require a client certificate signed by --tlscacert")
	showVersion := fs.Bool("version", false, "print the version and exit")
	applyJail := o.VMMJailOptions.flags(fs)
	applyLocal := o.LocalOptions.flags(fs)
	applyNetwork := o.NetworkOptions.flags(fs)
	applyCRI := o.CRIOptions.flags(fs)
	applyMirrors := o.MirrorOptions.flags(fs)
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if *showVersion {
		fmt.Println("hyperd", version)
		os.Exit(0)
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	if cfgPath != "" {
		b, err := os.ReadFile(cfgPath)
		if err != nil {
			return o, err
		}
		if err := json.Unmarshal(b, &o); err != nil {
			return o, fmt.Errorf("config %s: %w", cfgPath, err)
		}
	}
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "host", "H":
			o.Host = *host
		case "data-root":
			o.DataRoot = *dataRoot
		case "driver":
			o.Driver = *driver
		case "kernel":
			o.Kernel = *kernel
		case "initrd":
			o.Initrd = *initrd
		case "kernel-args":
			o.KernelArgs = *kernelArgs
		case "vcpu":
			o.VCPU = *vcpu
		case "memory":
			o.Memory = *mem
		case "log-level":
			o.LogLevel = *logLevel
		case "log-format":
			o.LogFormat = *logFormat
		case "stop-timeout":
			o.StopTimeoutSecond = *stopTimeout
		case "stop-pods-on-exit":
			o.StopPodsOnExit = *stopPods
		case "boot-timeout":
			o.BootTimeoutSecond = *bootTimeout
		case "boot-retries":
			o.BootRetries = *bootRetries
		case "vm-template":
			o.VMTemplate = *vmTemplate
		case "max-connections":
			o.MaxConnections = *maxConns
		case "insecure-registry":
			o.InsecureRegistry = append(o.InsecureRegistry, insecure...)
		case "log-opt":
			if o.LogOpts == nil {
				o.LogOpts = map[string]string{}
			}
			for _, kv := range logOpts {
				k, v, _ := strings.Cut(kv, "=")
				o.LogOpts[k] = v
			}
		case "tlscacert":
			o.CACert = *tlsCA
		case "tlscert":
			o.Cert = *tlsCert
		case "tlskey":
			o.Key = *tlsKey
		case "tlsverify":
			o.Verify = *tlsVerify
		}
	})
	if err := applyJail(); err != nil {
		return o, err
	}
	if err := applyLocal(); err != nil {
		return o, err
	}
	if err := applyNetwork(); err != nil {
		return o, err
	}
	if err := applyCRI(); err != nil {
		return o, err
	}
	if err := applyMirrors(); err != nil {
		return o, err
	}
	switch o.Driver {
	case "auto", "kvm", "local":
	default:
		return o, fmt.Errorf("--driver %q: want auto, kvm or local", o.Driver)
	}
	if o.BootTimeoutSecond < 1 {
		return o, fmt.Errorf("--boot-timeout must be >= 1 second")
	}
	if o.BootRetries < 0 || o.BootRetries > 5 {
		return o, fmt.Errorf("--boot-retries must be 0 to 5")
	}
	if err := o.TLSOptions.check(o.Host); err != nil {
		return o, err
	}
	if o.MaxConnections < 0 {
		return o, fmt.Errorf("--max-connections must be >= 0 (0: no cap)")
	}
	if _, err := pod.ParseLogLimits(o.LogOpts, pod.DefaultLogLimits); err != nil {
		return o, fmt.Errorf("--log-opt: %w", err)
	}
	if o.VCPU < 1 || o.Memory < 16 {
		return o, fmt.Errorf("--vcpu must be >= 1 and --memory >= 16 MiB")
	}
	return o, nil
}

func newLogger(o Options) *slog.Logger {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(o.LogLevel)); err != nil {
		lvl = slog.LevelInfo
	}
	ho := &slog.HandlerOptions{Level: lvl}
	if o.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, ho))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, ho))
}

func run(args []string) int {
	o, err := parseOptions(args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(os.Stderr, "hyperd:", err)
		return 2
	}
	log := newLogger(o)
	slog.SetDefault(log)
	if err := os.MkdirAll(o.DataRoot, 0o700); err != nil {
		log.Error("data root", "err", err)
		return 1
	}
	drv, warning, err := selectDriver(o, log)
	if err != nil {
		log.Error("sandbox driver", "err", err)
		return 1
	}
	if warning != "" {
		log.Warn("!!! " + warning)
	}
	netDrv, err := o.NetworkOptions.withNetwork(drv, o.DataRoot, log)
	if err != nil {
		log.Error("pod network", "err", err)
		return 1
	}
	if netDrv != nil {
		drv = netDrv
	}
	imgs, imgSvc, err := openImages(o, log)
	if err != nil {
		log.Error("image store", "err", err)
		return 1
	}
	if imgSvc == nil {
		log.Warn("no image store in this build: image routes answer 501 and pods cannot be created")
	}
	if err := o.MirrorOptions.applyMirrors(imgs); err != nil {
		log.Error("image store", "err", err)
		return 1
	}
	logLimits, _ := pod.ParseLogLimits(o.LogOpts, pod.DefaultLogLimits) // checked by parseOptions
	d, err := pod.New(pod.Config{DataRoot: o.DataRoot, LogLimits: logLimits, Driver: drv, Images: imgs, Logger: log, DefaultVCPU: o.VCPU,
		DefaultMemory: o.Memory, DriverWarning: warning, StopTimeout: time.Duration(o.StopTimeoutSecond) * time.Second, Networking: netDrv != nil})
	if err != nil {
		log.Error("daemon state", "err", err)
		return 1
	}
	if netDrv != nil {
		go collectNetworks(netDrv, d.WaitReattached, log)
	}
	srv := &api.Server{Pods: d, Images: imgSvc, Log: log, Version: version, DataRoot: o.DataRoot, Warning: warning}
	tlsCfg, err := o.TLSOptions.serverConfig()
	if err != nil {
		log.Error("tls", "err", err)
		d.Close()
		return 1
	}
	ln, err := listen(o.Host)
	if err != nil {
		log.Error("listen", "host", o.Host, "err", err)
		d.Close()
		return 1
	}
	stopCRI, err := o.CRIOptions.serveCRI(d, imgs, netDrv != nil, o.VCPU, o.Memory, log)
	if err != nil {
		log.Error("cri", "err", err)
		ln.Close()
		d.Close()
		return 1
	}
	// The cap counts raw connections, under TLS; only plain ones can be
	// answered the 503 (see api.LimitListener).
	ln = api.LimitListener(ln, o.MaxConnections, tlsCfg == nil)
	if tlsCfg != nil {
		ln = tls.NewListener(ln, tlsCfg)
	}
	if w := o.TLSOptions.exposure(o.Host); w != "" {
		log.Warn(w)
	}
	// Header, idle and body-inactivity timeouts, no whole-request or write
	// timeout (uploads and streams last as long as they last): api/limits.go.
	hs := api.NewHTTPServer(srv.Handler(), api.DefaultLimits())
	hs.ErrorLog = slog.NewLogLogger(log.Handler(), slog.LevelDebug)
	log.Info("hyperd serving", "version", version, "host", o.Host, "data-root", o.DataRoot, "driver", drv.Name(), "isolation", drv.Isolation(), "pid", os.Getpid())
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, syscall.SIGTERM, syscall.SIGINT)
	code := 0
	select {
	case s := <-sigc:
		log.Info("shutting down", "signal", s.String())
	case err := <-errc:
		log.Error("serve", "err", err)
		code = 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	hs.Shutdown(ctx)
	cancel()
	hs.Close()
	stopCRI()
	if o.StopPodsOnExit {
		ctx, cancel := context.WithTimeout(context.Background(), time.Duration(o.StopTimeoutSecond)*time.Second+30*time.Second)
		n := d.StopAll(ctx)
		cancel()
		log.Info("stopped the running pods (--stop-pods-on-exit)", "pods", n)
	}
	if err := d.Close(); err != nil {
		log.Error("close state", "err", err)
	}
	if strings.HasPrefix(o.Host, "unix://") {
		os.Remove(strings.TrimPrefix(o.Host, "unix://"))
	}
	if o.StopPodsOnExit {
		log.Info("hyperd stopped; pods keep their records, their sandboxes were stopped")
	} else {
		log.Info("hyperd stopped; pods keep their records, sandboxes are left running for the next start to reattach")
	}
	return code
}

// listen opens the API socket: unix sockets are mode 0660 owned by root.
func listen(host string) (net.Listener, error) {
	switch {
	case strings.HasPrefix(host, "unix://"):
		path := strings.TrimPrefix(host, "unix://")
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return nil, err
		}
		if _, err := os.Stat(path); err == nil {
			if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
				c.Close()
				return nil, fmt.Errorf("another daemon is serving %s", path)
			}
			os.Remove(path)
		}
		old := syscall.Umask(0o117)
		ln, err := net.Listen("unix", path)
		syscall.Umask(old)
		if err != nil {
			return nil, err
		}
		os.Chmod(path, 0o660)
		os.Chown(path, 0, 0)
		return ln, nil
	case strings.HasPrefix(host, "tcp://"):
		return net.Listen("tcp", strings.TrimPrefix(host, "tcp://"))
	}
	return nil, fmt.Errorf("--host %q: want unix:///path or tcp://addr:port", host)
}
