package main

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

func TestParseOptions(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "hyperd.json")
	os.WriteFile(cfg, []byte(`{"host":"unix:///tmp/from-config.sock","driver":"local","memory":256,"insecure-registries":["r:5000"],"unknown":1}`), 0o644)
	cfgUserNS := filepath.Join(t.TempDir(), "userns.json")
	os.WriteFile(cfgUserNS, []byte(`{"local-userns":"on"}`), 0o644)
	tests := []struct {
		name    string
		args    []string
		want    func(o *Options)
		wantErr bool
	}{
		{name: "defaults", args: nil, want: func(o *Options) {}},
		{name: "flags", args: []string{"--host", "unix:///tmp/x.sock", "--data-root", "/tmp/d", "--driver", "local", "--kernel", "/k", "--initrd", "/i", "--vcpu", "2", "--memory", "512"},
			want: func(o *Options) {
				o.Host, o.DataRoot, o.Driver, o.Kernel, o.Initrd, o.VCPU, o.Memory = "unix:///tmp/x.sock", "/tmp/d", "local", "/k", "/i", 2, 512
			}},
		{name: "config file", args: []string{"--config", cfg}, want: func(o *Options) {
			o.Host, o.Driver, o.Memory, o.InsecureRegistry = "unix:///tmp/from-config.sock", "local", 256, []string{"r:5000"}
		}},
		{name: "flag beats config", args: []string{"--config", cfg, "--driver", "kvm"}, want: func(o *Options) {
			o.Host, o.Driver, o.Memory, o.InsecureRegistry = "unix:///tmp/from-config.sock", "kvm", 256, []string{"r:5000"}
		}},
		{name: "bad driver", args: []string{"--driver", "qemu"}, wantErr: true},
		{name: "bad memory", args: []string{"--memory", "1"}, wantErr: true},
		{name: "boot timeout", args: []string{"--boot-timeout", "90"}, want: func(o *Options) { o.BootTimeoutSecond = 90 }},
		{name: "stop pods on exit", args: []string{"--stop-pods-on-exit"}, want: func(o *Options) { o.StopPodsOnExit = true }},
		{name: "max connections", args: []string{"--max-connections", "8"}, want: func(o *Options) { o.MaxConnections = 8 }},
		{name: "no connection cap", args: []string{"--max-connections", "0"}, want: func(o *Options) { o.MaxConnections = 0 }},
		{name: "bad max connections", args: []string{"--max-connections", "-1"}, wantErr: true},
		{name: "log opts", args: []string{"--log-opt", "max-size=1m", "--log-opt", "max-file=2"}, want: func(o *Options) {
			o.LogOpts = map[string]string{"max-size": "1m", "max-file": "2"}
		}},
		{name: "bad log opt size", args: []string{"--log-opt", "max-size=lots"}, wantErr: true},
		{name: "bad log opt key", args: []string{"--log-opt", "max-age=1d"}, wantErr: true},
		{name: "local userns off", args: []string{"--local-userns", "off"}, want: func(o *Options) { o.LocalUserNS = "off" }},
		{name: "local userns from config", args: []string{"--config", cfgUserNS}, want: func(o *Options) { o.LocalUserNS = "on" }},
		{name: "bad local userns", args: []string{"--local-userns", "maybe"}, wantErr: true},
		{name: "vm templates off", args: []string{"--vm-template=false"}, want: func(o *Options) { o.VMTemplate = false }},
		{name: "bad boot timeout", args: []string{"--boot-timeout", "0"}, wantErr: true},
		{name: "stray argument", args: []string{"extra"}, wantErr: true},
		{name: "missing config", args: []string{"--config", "/nonexistent.json"}, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseOptions(tc.args)
			if tc.wantErr {
				if err == nil {
					t.Fatalf("accepted: %+v", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := Options{Host: "unix:///var/run/hyper.sock", DataRoot: "/var/lib/hyper", Driver: "auto", VCPU: 1, Memory: 128, LogLevel: "info", LogFormat: "text", StopTimeoutSecond: 10, BootTimeoutSecond: 30, VMTemplate: true, MaxConnections: 1024}
			tc.want(&want)
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("got %+v\nwant %+v", got, want)
			}
		})
	}
}

func TestListenSocketMode(t *testing.T) {
	p := filepath.Join(t.TempDir(), "run", "hyper.sock")
	ln, err := listen("unix://" + p)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	st, err := os.Stat(p)
	if err != nil || st.Mode().Perm() != 0o660 {
		t.Fatalf("mode %v %v", st.Mode().Perm(), err)
	}
	if _, err := listen("unix://" + p); err == nil {
		t.Fatal("a second daemon could listen on a live socket")
	}
	if _, err := listen("http://x"); err == nil {
		t.Fatal("bad scheme accepted")
	}
}
