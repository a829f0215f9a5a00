// Package api serves the hyperd REST API (see ../shared/api-reference.md and
// hyperd-compat.md) over net/http: a ServeMux with method patterns, every
// route also under any /v<version>/ prefix, JSON errors {"message": ...}
// with 400/404/405/409/500/501, panics recovered per request, and the
// hijacked attach / exec-start streams (101 UPGRADED, Upgrade: tcp; Docker's
// 8-byte stdout/stderr frames without a tty, raw bytes with one).
//
// It owns the wire types; the daemon core is reached through pod.Core (the
// CRI server, package cri, is a sibling over the same interface), the image
// store through ImageService. The Go client is api/client.
//
// Files:
//
//   - server.go: the Server, the route table (Handler), the middleware, and
//     reply, which serves a handler whose answer is one JSON value or an error
//   - errors.go: the one mapping from errors to HTTP statuses, and fail
//   - params.go: every query parameter, header and body a handler reads
//   - system.go: /_ping, /version, /info
//   - pods.go: /pod/... and /list
//   - containers.go: /container/... and /exitcode
//   - execs.go: /exec/create, /exec/start, /execvm
//   - streams.go: /attach, /tty/resize, the hijacked stdio stream (torn down
//     when the client hangs up) and Docker frames
//   - images.go: /image(s)/..., /auth and the JSON progress stream
//   - types.go: the wire types and ImageService
package api
