// Package dockerfile parses Dockerfiles: comments, line continuations, the escape
// parser directive, and the instructions FROM, RUN, CMD, ENTRYPOINT (shell and exec
// forms), COPY, ADD, ENV and LABEL (both forms), WORKDIR, EXPOSE, USER, ARG, VOLUME,
// STOPSIGNAL, plus word splitting with quotes and ${VAR} substitution
// ($VAR, ${VAR}, ${VAR:-default}, ${VAR:+alternative}).
//
// ParseIgnore reads .dockerignore files. It only parses; image/ executes the
// instructions.
package dockerfile
