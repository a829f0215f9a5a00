package pod

import (
	"errors"
	"strings"
	"testing"
)

func TestPodSpecNormalize(t *testing.T) {
	tests := []struct {
		name    string
		json    string
		wantErr string // substring; "" = valid
		check   func(t *testing.T, s *PodSpec)
	}{
		{name: "minimal defaults", json: `{"containers":[{"image":"busybox"}]}`, check: func(t *testing.T, s *PodSpec) {
			if !strings.HasPrefix(s.ID, "pod-") || len(s.ID) != 14 {
				t.Errorf("id %q", s.ID)
			}
			if s.Hostname != strings.ToLower(s.ID) {
				t.Errorf("hostname %q for id %q", s.Hostname, s.ID)
			}
			if got, want := s.Containers[0].Name, s.ID+"-busybox-0"; got != want {
				t.Errorf("container name %q want %q", got, want)
			}
			if s.Containers[0].RestartPolicy != RestartNever {
				t.Errorf("restart %q", s.Containers[0].RestartPolicy)
			}
		}},
		{name: "case-insensitive names and unknown fields", json: `{"ID":"p1","Containers":[{"Image":"docker.io/library/busybox:1.36","Command":["sh"]}],"futureField":{"x":1}}`, check: func(t *testing.T, s *PodSpec) {
			if s.ID != "p1" || s.Containers[0].Name != "p1-busybox-0" || s.Containers[0].Command[0] != "sh" {
				t.Errorf("got %+v", s)
			}
		}},
		{name: "pod tty applies to containers", json: `{"id":"p","tty":true,"containers":[{"image":"a"},{"image":"b","name":"bee"}]}`, check: func(t *testing.T, s *PodSpec) {
			for _, c := range s.Containers {
				if !c.Tty {
					t.Errorf("%s tty off", c.Name)
				}
			}
		}},
		{name: "file perm default", json: `{"id":"p","files":[{"name":"f","content":"hi"}],"containers":[{"image":"a","files":[{"path":"/etc/f","filename":"f"}]}]}`, check: func(t *testing.T, s *PodSpec) {
			if s.Containers[0].Files[0].Perm != "0755" {
				t.Errorf("perm %q", s.Containers[0].Files[0].Perm)
			}
		}},
		{name: "numeric and range ports", json: `{"id":"p","portmappings":[{"containerPort":80,"hostPort":"8080"},{"containerPort":"9000-9001","hostPort":"19000-19001","protocol":"UDP"}],"containers":[{"image":"a"}]}`, check: func(t *testing.T, s *PodSpec) {
			if s.PortMappings[0].ContainerPort != "80" || s.PortMappings[0].Protocol != "tcp" || s.PortMappings[1].Protocol != "udp" {
				t.Errorf("%+v", s.PortMappings)
			}
		}},
		{name: "restart policy", json: `{"id":"p","restartPolicy":"always","containers":[{"image":"a"},{"image":"b","name":"b","restartPolicy":"onFailure"}]}`, check: func(t *testing.T, s *PodSpec) {
			if s.Containers[0].RestartPolicy != RestartAlways || s.Containers[1].RestartPolicy != RestartOnFailure {
				t.Errorf("%+v", s.Containers)
			}
		}},
		{name: "long id hostname cut", json: `{"id":"` + strings.Repeat("a", 70) + `","containers":[]}`, check: func(t *testing.T, s *PodSpec) {
			if len(s.Hostname) != 63 {
				t.Errorf("hostname len %d", len(s.Hostname))
			}
		}},
		{name: "bad dns", json: `{"dns":["8.8.8.8","dns.google"],"containers":[]}`, wantErr: "incorrect dns"},
		{name: "bad hostname", json: `{"hostname":"Bad_Host","containers":[]}`, wantErr: "hostname"},
		{name: "no image", json: `{"containers":[{"name":"x"}]}`, wantErr: "has no image"},
		{name: "dup volume", json: `{"volumes":[{"name":"v"},{"name":"v"}],"containers":[]}`, wantErr: "volume name \"v\" is not unique"},
		{name: "dup file", json: `{"files":[{"name":"f"},{"name":"f"}],"containers":[]}`, wantErr: "file name \"f\" is not unique"},
		{name: "dup env", json: `{"containers":[{"image":"a","envs":[{"env":"A","value":"1"},{"env":"A","value":"2"}]}]}`, wantErr: "not unique"},
		{name: "unknown volume", json: `{"containers":[{"image":"a","volumes":[{"path":"/d","volume":"nope"}]}]}`, wantErr: "does not exist"},
		{name: "unknown file", json: `{"containers":[{"image":"a","files":[{"path":"/d","filename":"nope"}]}]}`, wantErr: "does not exist"},
		{name: "bad perm", json: `{"files":[{"name":"f"}],"containers":[{"image":"a","files":[{"path":"/f","filename":"f","perm":"999"}]}]}`, wantErr: "octal"},
		{name: "range size mismatch", json: `{"portmappings":[{"containerPort":"80-81","hostPort":"80"}],"containers":[]}`, wantErr: "differ in size"},
		{name: "bad protocol", json: `{"portmappings":[{"containerPort":"80","protocol":"sctp"}],"containers":[]}`, wantErr: "tcp or udp"},
		{name: "port out of range", json: `{"portmappings":[{"containerPort":"70000"}],"containers":[]}`, wantErr: "out of range"},
		{name: "dup container name", json: `{"containers":[{"image":"a","name":"x"},{"image":"b","name":"x"}]}`, wantErr: "not unique"},
		{name: "bad restart", json: `{"restartPolicy":"sometimes","containers":[]}`, wantErr: "restartPolicy"},
		{name: "bad base64", json: `{"files":[{"name":"f","encoding":"base64","content":"!!"}],"containers":[]}`, wantErr: "base64"},
		{name: "bad stop signal", json: `{"containers":[{"image":"a","StopSignal":"SIGNOPE"}]}`, wantErr: "invalid signal"},
		{name: "malformed", json: `{"containers":[`, wantErr: "malformed pod spec"},
		{name: "wrong type", json: `{"containers":"x"}`, wantErr: "malformed pod spec"},
		{name: "empty", json: ``, wantErr: "empty pod spec"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := DecodePodSpec([]byte(tc.json))
			if err == nil {
				err = s.Normalize()
			}
			if tc.wantErr != "" {
				var se *SpecError
				if err == nil || !errors.As(err, &se) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want SpecError containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, s)
		})
	}
}

func TestExpandPortMapping(t *testing.T) {
	got, err := ExpandPortMapping(PortMapping{ContainerPort: "80-82", HostPort: "8080-8082"})
	if err != nil {
		t.Fatal(err)
	}
	want := []PortPair{{"tcp", 8080, 80}, {"tcp", 8081, 81}, {"tcp", 8082, 82}}
	if len(got) != len(want) {
		t.Fatalf("%v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("%d: %v want %v", i, got[i], want[i])
		}
	}
}

func TestParseSignal(t *testing.T) {
	for in, want := range map[string]int{"9": 9, "KILL": 9, "SIGTERM": 15, "sigint": 2} {
		if got, err := ParseSignal(in); err != nil || got != want {
			t.Errorf("%s: %d %v", in, got, err)
		}
	}
	for _, in := range []string{"", "0", "65", "NOPE"} {
		if _, err := ParseSignal(in); err == nil {
			t.Errorf("%q accepted", in)
		}
	}
}

// FuzzPodSpec checks that no input makes the decoder or validator panic and
// that every rejection is a SpecError (a 400, never a 500).
func FuzzPodSpec(f *testing.F) {
	for _, s := range []string{
		`{"containers":[{"image":"busybox"}]}`,
		`{"id":"p","hostname":"h","tty":true,"dns":["1.1.1.1"],"portmappings":[{"containerPort":"1-3","hostPort":"4-6"}],"volumes":[{"name":"v"}],"files":[{"name":"f","encoding":"base64","content":"aGk="}],"containers":[{"image":"a","volumes":[{"path":"/v","volume":"v"}],"files":[{"path":"/f","filename":"f"}],"ports":[{"containerPort":80}]}]}`,
		`{"containers":[{"image":"a","StopSignal":"TERM","envs":[{"env":"A"}]}]}`,
		`[]`, `null`, `{"resource":{"vcpu":-1}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := DecodePodSpec(data)
		if err == nil {
			err = s.Normalize()
		}
		if err != nil {
			var se *SpecError
			if !errors.As(err, &se) {
				t.Fatalf("non-SpecError %T: %v", err, err)
			}
			return
		}
		for _, pm := range s.PortMappings {
			if _, err := ExpandPortMapping(pm); err != nil {
				t.Fatalf("normalized mapping invalid: %v", err)
			}
		}
	})
}
