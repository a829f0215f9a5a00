package pod

// volumes_test.go tests uriFetcher: the size limit is an error naming it,
// slow servers time out, and neither an address nor a redirect nor a name
// reaches the host's loopback, link-local or cloud metadata addresses.

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestFetchURI(t *testing.T) {
	const small = 1 << 10
	mux := http.NewServeMux()
	srv := httptest.NewServer(mux)
	defer srv.Close()
	port := srv.URL[strings.LastIndex(srv.URL, ":")+1:]
	redirect := func(to string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, to, http.StatusFound) }
	}
	mux.HandleFunc("/ok", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("hello")) })
	mux.HandleFunc("/limit", func(w http.ResponseWriter, r *http.Request) { w.Write(bytes.Repeat([]byte("x"), small)) })
	mux.HandleFunc("/over-length", func(w http.ResponseWriter, r *http.Request) { w.Write(bytes.Repeat([]byte("x"), small+1)) })
	mux.HandleFunc("/over-chunked", func(w http.ResponseWriter, r *http.Request) {
		for range small + 1 { // no Content-Length: only the bytes read tell
			w.Write([]byte("x"))
			w.(http.Flusher).Flush()
		}
	})
	mux.HandleFunc("/over-16m", func(w http.ResponseWriter, r *http.Request) {
		w.(http.Flusher).Flush()
		w.Write(make([]byte, 16<<20+1))
	})
	mux.HandleFunc("/slow-body", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "10")
		w.Write([]byte("12345"))
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	})
	mux.HandleFunc("/slow-headers", func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
	mux.HandleFunc("/missing", http.NotFound)
	mux.HandleFunc("/to-metadata", redirect("http://169.254.169.254/latest/meta-data/"))
	mux.HandleFunc("/to-mapped-metadata", redirect("http://[::ffff:169.254.169.254]/latest/meta-data/"))
	mux.HandleFunc("/to-fe80", redirect("http://[fe80::1]/"))
	mux.HandleFunc("/to-alibaba", redirect("http://100.100.100.200/latest/meta-data/"))
	mux.HandleFunc("/to-unspecified", redirect("http://0.0.0.0:"+port+"/ok")) // 0.0.0.0 dials the host itself
	mux.HandleFunc("/to-ok", redirect("/ok"))

	tests := []struct {
		name    string
		f       uriFetcher
		uri     string
		want    string // the content, or
		wantErr string // an error containing this
	}{
		{"ok", uriFetcher{Timeout: 5 * time.Second, Limit: small, AllowLoopback: true}, srv.URL + "/ok", "hello", ""},
		{"redirect within allowed", uriFetcher{Timeout: 5 * time.Second, Limit: small, AllowLoopback: true}, srv.URL + "/to-ok", "hello", ""},
		{"exactly the limit", uriFetcher{Timeout: 5 * time.Second, Limit: small, AllowLoopback: true}, srv.URL + "/limit", strings.Repeat("x", small), ""},
		{"over the limit, Content-Length", uriFetcher{Timeout: 5 * time.Second, Limit: small, AllowLoopback: true}, srv.URL + "/over-length", "", "larger than the 1024 bytes limit"},
		{"over the limit, chunked", uriFetcher{Timeout: 5 * time.Second, Limit: small, AllowLoopback: true}, srv.URL + "/over-chunked", "", "larger than the 1024 bytes limit"},
		{"over hyperd's 16 MiB", uriFetcher{Timeout: 5 * time.Second, Limit: podFiles.Limit, AllowLoopback: true}, srv.URL + "/over-16m", "", "larger than the 16 MiB limit"},
		{"slow body", uriFetcher{Timeout: 200 * time.Millisecond, Limit: small, AllowLoopback: true}, srv.URL + "/slow-body", "", "not fetched within 200ms"},
		{"slow headers", uriFetcher{Timeout: 200 * time.Millisecond, Limit: small, AllowLoopback: true}, srv.URL + "/slow-headers", "", "not fetched within 200ms"},
		{"not found", uriFetcher{Timeout: 5 * time.Second, Limit: small, AllowLoopback: true}, srv.URL + "/missing", "", "404 Not Found"},
		{"redirect to metadata", uriFetcher{Timeout: 5 * time.Second, Limit: small, AllowLoopback: true}, srv.URL + "/to-metadata", "", "not fetched from 169.254.169.254 (link-local"},
		{"redirect to mapped metadata", uriFetcher{Timeout: 5 * time.Second, Limit: small, AllowLoopback: true}, srv.URL + "/to-mapped-metadata", "", "(link-local"},
		{"redirect to fe80::/10", uriFetcher{Timeout: 5 * time.Second, Limit: small, AllowLoopback: true}, srv.URL + "/to-fe80", "", "not fetched from fe80::1 (link-local"},
		{"redirect to Alibaba metadata", uriFetcher{Timeout: 5 * time.Second, Limit: small, AllowLoopback: true}, srv.URL + "/to-alibaba", "", "(a cloud metadata service)"},
		{"redirect to 0.0.0.0", uriFetcher{Timeout: 5 * time.Second, Limit: small, AllowLoopback: true}, srv.URL + "/to-unspecified", "", "not fetched from 0.0.0.0 (unspecified"},
		{"loopback by default", podFiles, srv.URL + "/ok", "", "not fetched from 127.0.0.1 (loopback"},
		{"a name resolving to loopback", podFiles, "http://localhost:" + port + "/ok", "", "(loopback"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			b, err := tc.f.fetch(context.Background(), tc.uri)
			if took := time.Since(start); took > tc.f.Timeout+2*time.Second {
				t.Fatalf("took %s", took)
			}
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got %d bytes, err %v; want an error with %q", len(b), err, tc.wantErr)
				}
				return
			}
			if err != nil || string(b) != tc.want {
				t.Fatalf("got %q %v", b, err)
			}
		})
	}
}

func TestRefusedAddr(t *testing.T) {
	tests := []struct {
		addr    string
		refused bool
	}{
		{"127.0.0.1", true}, {"127.1.2.3", true}, {"::1", true}, {"::ffff:127.0.0.1", true},
		{"0.0.0.0", true}, {"::", true},
		{"169.254.169.254", true}, {"169.254.0.1", true}, {"fe80::1", true}, {"febf::1", true},
		{"fd00:ec2::254", true}, {"100.100.100.200", true}, {"168.63.129.16", true}, {"192.0.0.192", true},
		{"224.0.0.1", true}, {"255.255.255.255", true}, {"ff02::1", true},
		{"10.0.0.1", false}, {"192.168.1.10", false}, {"172.16.0.1", false}, {"fd12::1", false},
		{"93.184.216.34", false}, {"2606:2800:220:1::1", false}, {"100.100.100.201", false},
	}
	for _, tc := range tests {
		why := podFiles.refusedAddr(netip.MustParseAddr(tc.addr))
		if (why != "") != tc.refused {
			t.Errorf("%s: refused %q, want refused=%v", tc.addr, why, tc.refused)
		}
	}
}
