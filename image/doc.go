// Package image is hyperd's image store and registry client.
//
// Layout under the store root (normally <data-root>/image):
//
//	blobs/sha256/<hex>   content-addressed blobs (OCI image layout): manifests,
//	                     configs and layers exactly as pulled, loaded or committed
//	images.db            bbolt: images (id -> record), refs (canonical reference -> id),
//	                     layers (layer digest -> diff id and uncompressed size)
//	rootfs/<hex>/        flattened, unpacked root filesystem per image id (local driver)
//	disk/<hex>.ext4      read-only ext4 disk image per image id (kvm driver)
//	tmp/                 partial downloads and builds; never referenced, wiped on Open
//
// An image id is the sha256 digest of its config ("sha256:<hex>"), as in Docker.
// References follow Docker's rules: "busybox" is docker.io/library/busybox:latest.
// Registries on loopback addresses are reached over plain HTTP; others only when listed
// in Store.InsecureRegistries.
//
// Blobs are always written to tmp/, verified (digest, and diff id for layers), and only
// then renamed into blobs/, so a half-pulled blob is never visible. A load, pull, commit
// or build pins its blobs with a lease (lease.go) before each is written or looked for,
// until its image is registered; GC (run by Remove) skips pinned blobs, and register
// refuses a record whose blobs are not all present. The registry protocol
// is github.com/google/go-containerregistry; layers are decompressed with
// github.com/klauspost/compress (gzip, zstd).
//
// Build is hyperd's one Dockerfile builder (POST /image/build): it runs a Dockerfile
// (parsed by image/dockerfile) against a tar context (identity, gzip, bzip2, xz, zstd).
// Supported instructions: FROM (incl. scratch and ARG substitution; pulled when missing
// or with pull, credentials from X-Registry-Config, the request or SaveAuth), RUN (shell
// and exec forms, executed by the daemon-supplied RunFunc: pod.Daemon.BuildRunner runs
// each step in a throw-away pod on the sandbox driver and the agent streams its
// changes), COPY and ADD (local files, globs, directories, symlinks, --chown=uid:gid;
// ADD auto-extracts local tar archives), ENV and LABEL (both forms), WORKDIR (missing
// directories are created), CMD, ENTRYPOINT, EXPOSE, USER, ARG (defaults, build args,
// ${VAR} substitution), VOLUME, STOPSIGNAL, MAINTAINER. Every step is cached in the
// buildcache bucket, keyed by the parent image, the instruction after substitution and,
// for COPY/ADD, the files' content and metadata (for RUN, the environment); nocache
// skips the cache, q prints only the final id. .dockerignore is honoured (globs, **, !
// exceptions). The context is extracted (buildctx.go) into tmp/ as plain files (0600,
// no setuid/setgid, no xattrs) with its tar modes kept aside for COPY; absolute or
// escaping names, whiteout names (.wh.*), device nodes and FIFOs are refused (400), and
// no COPY/ADD (nor an ADDed archive) may put a .wh.* name into a layer. Not supported: multi-stage COPY --from, ADD of URLs, HEALTHCHECK,
// ONBUILD, SHELL.
//
// SaveAuth keeps credentials (POST /auth after CheckAuth) per registry in the auth
// bucket of images.db; Pull, Push and FROM use them when a call carries none.
//
// Errors wrap ErrNotFound, ErrConflict or ErrInvalid so callers can map them to HTTP
// 404, 409 and 400.
package image
