// Package api serves the hyperd REST API (see ../shared/api-reference.md and
// hyperd-compat.md) over net/http: a ServeMux with method patterns, every
// route also under any /v<version>/ prefix, JSON errors {"message": ...}
// with 400/404/405/409/500/501, panics recovered per request, and the
// hijacked attach / exec-start streams (101 UPGRADED, Upgrade: tcp; Docker's
// 8-byte stdout/stderr frames without a tty, raw bytes with one).
//
// It owns the wire types; the daemon core is package pod, the image store is
// reached through ImageService. The Go client is api/client.
package api
