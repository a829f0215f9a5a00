package api

// params.go owns how a handler reads its request's parameters: query values
// (optional q, required need, repeated all, booleans, the signal, the pod,
// container references, JSON-valued ones), base64 JSON headers and
// bodies. A missing or malformed parameter is a badParam (400). Handlers
// read no query or header parameter but through these.

import (
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"strings"

	"github.com/hyperhq/hyperd-go/pod"
)

// q returns the first non-empty query value among names.
func q(r *http.Request, names ...string) string {
	v := r.URL.Query()
	for _, n := range names {
		if s := v.Get(n); s != "" {
			return s
		}
	}
	return ""
}

// need is q for a required parameter: missing, it is named (by its first
// name) in a 400.
func need(r *http.Request, names ...string) (string, error) {
	if s := q(r, names...); s != "" {
		return s, nil
	}
	return "", badParam("missing query parameter %s", names[0])
}

// all returns every value of every name, in the order of names.
func all(r *http.Request, names ...string) []string {
	v := r.URL.Query()
	var out []string
	for _, n := range names {
		out = append(out, v[n]...)
	}
	return out
}

// boolParam reads yes/true/on/1 or no/false/off/0; absent or anything
// else, def.
func boolParam(r *http.Request, name string, def bool) bool {
	switch strings.ToLower(q(r, name)) {
	case "yes", "true", "on", "1":
		return true
	case "no", "false", "off", "0":
		return false
	}
	return def
}

// sigParam is the signal parameter (a number or a name): SIGKILL if absent.
func sigParam(r *http.Request) (int, error) {
	sv := q(r, "signal")
	if sv == "" {
		return 9, nil
	}
	n, err := pod.ParseSignal(sv)
	if err != nil {
		return 0, badParam("%v", err)
	}
	return n, nil
}

// podRef is the required pod (an id or a name).
func podRef(r *http.Request) (string, error) { return need(r, "podId", "podName", "pod") }

// ctrRef is the required container (an id or a name).
func ctrRef(r *http.Request) (string, error) { return need(r, "container", "id", "value", "name") }

// jsonParam decodes the JSON value of query parameter name into v and says
// whether it was there; what says what it must be, for the 400.
func jsonParam(r *http.Request, name, what string, v any) (bool, error) {
	s := q(r, name)
	if s == "" {
		return false, nil
	}
	if err := json.Unmarshal([]byte(s), v); err != nil {
		return true, badParam("%s must be %s: %v", name, what, err)
	}
	return true, nil
}

// headerJSON decodes a base64 (URL or standard alphabet) JSON header into v;
// an absent header leaves v alone.
func headerJSON(r *http.Request, name, what string, v any) error {
	h := r.Header.Get(name)
	if h == "" {
		return nil
	}
	b, err := base64.URLEncoding.DecodeString(h)
	if err != nil {
		b, err = base64.StdEncoding.DecodeString(h)
	}
	if err != nil {
		return badParam("%s is not base64: %v", name, err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return badParam("%s is not %s: %v", name, what, err)
	}
	return nil
}

// authHeader decodes X-Registry-Auth: nil if absent.
func authHeader(r *http.Request) (*AuthConfig, error) {
	var a *AuthConfig
	if err := headerJSON(r, "X-Registry-Auth", "an AuthConfig", &a); err != nil {
		return nil, err
	}
	return a, nil
}

// registryConfig decodes X-Registry-Config: base64 JSON of registry -> AuthConfig.
func registryConfig(r *http.Request) (map[string]AuthConfig, error) {
	var m map[string]AuthConfig
	err := headerJSON(r, "X-Registry-Config", "a JSON object of AuthConfig per registry", &m)
	return m, err
}

// Body limits: a pod or container spec, and any other JSON body.
const (
	specLimit = 16 << 20
	bodyLimit = 1 << 20
)

// readBody reads the body, up to limit bytes.
func readBody(r *http.Request, limit int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r.Body, limit))
	if err != nil {
		return nil, badParam("reading body: %v", err)
	}
	return b, nil
}

// optionalJSONBody decodes a JSON body of up to bodyLimit bytes into v and
// says whether there was one; a blank body leaves v alone. what names the
// body for the 400.
func optionalJSONBody(r *http.Request, what string, v any) (bool, error) {
	b, err := io.ReadAll(io.LimitReader(r.Body, bodyLimit+1))
	if err != nil {
		// a body cut short (or stalled past the server's body timeout) is
		// not an empty one: nothing is done on half a request
		return false, badParam("%s: reading the body: %v", what, err)
	}
	if len(b) > bodyLimit {
		return false, badParam("%s: the body is larger than %d bytes", what, bodyLimit)
	}
	if len(strings.TrimSpace(string(b))) == 0 {
		return false, nil
	}
	if err := json.Unmarshal(b, v); err != nil {
		return true, badParam("%s: %v", what, err)
	}
	return true, nil
}

// jsonBody decodes a required JSON body of up to bodyLimit bytes into v.
func jsonBody(r *http.Request, what string, v any) error {
	if err := json.NewDecoder(io.LimitReader(r.Body, bodyLimit)).Decode(v); err != nil {
		return badParam("%s: %v", what, err)
	}
	return nil
}
