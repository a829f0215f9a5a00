// This file tests the request body helpers.
package api

import (
	"errors"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
)

// cutBody yields its bytes, then an error: a client that went away mid-body.
type cutBody struct{ r io.Reader }

func (c cutBody) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if err == io.EOF {
		return n, errors.New("unexpected EOF")
	}
	return n, err
}

func TestOptionalJSONBody(t *testing.T) {
	for _, c := range []struct {
		name    string
		body    io.Reader
		present bool
		wantErr bool
	}{
		{"empty", strings.NewReader(""), false, false},
		{"blank", strings.NewReader(" \n"), false, false},
		{"json", strings.NewReader(`{"a":1}`), true, false},
		{"bad json", strings.NewReader(`{"a":`), true, true},
		{"cut short", cutBody{strings.NewReader(`{"a":1`)}, false, true},
		{"cut before a byte", cutBody{strings.NewReader("")}, false, true},
		{"too large", strings.NewReader(`{"a":"` + strings.Repeat("x", bodyLimit) + `"}`), false, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := httptest.NewRequest("POST", "/container/commit", c.body)
			var v struct{ A any }
			present, err := optionalJSONBody(r, "body", &v)
			if present != c.present || (err != nil) != c.wantErr {
				t.Errorf("optionalJSONBody = %v, %v; want present %v, error %v", present, err, c.present, c.wantErr)
			}
		})
	}
}
