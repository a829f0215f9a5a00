package main

import (
	"archive/tar"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/hyperhq/hyperd-go/api/client"
)

func cmdBuild(x *cli, args []string) error {
	f := newFlags("build")
	var tags multi
	f.Var(&tags, "t", "name[:tag] of the result (repeatable)")
	dockerfile := f.String("f", "", "Dockerfile path inside the context")
	noCache := f.Bool("no-cache", false, "do not use the layer cache")
	pull := f.Bool("pull", false, "always pull the FROM image")
	quiet := f.Bool("q", false, "print only the image id")
	rm := f.Bool("rm", true, "remove each step's container once it is committed")
	forceRm := f.Bool("force-rm", false, "remove the container of a failed step too")
	var buildArgs multi
	f.Var(&buildArgs, "build-arg", "KEY=VALUE for an ARG (repeatable)")
	if err := parseArgs(f, args, 1, 1); err != nil {
		return err
	}
	opt := client.BuildOptions{Tags: tags, Dockerfile: *dockerfile, NoCache: *noCache, Pull: *pull, Quiet: *quiet,
		NoRm: !*rm, ForceRm: *forceRm}
	for _, kv := range buildArgs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			v, ok = os.LookupEnv(k) // docker: --build-arg KEY takes the value from the environment
		}
		if k == "" || !ok {
			return fmt.Errorf("--build-arg %q: want KEY=VALUE (or KEY set in the environment)", kv)
		}
		if opt.BuildArgs == nil {
			opt.BuildArgs = map[string]string{}
		}
		opt.BuildArgs[k] = v
	}
	dir := f.Arg(0)
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(tarDir(dir, pw)) }()
	// with -q the daemon's stream is just the image id
	return x.c.BuildWith(ctx(), pr, opt, x.progress())
}

// tarDir writes dir as an uncompressed tar build context.
func tarDir(dir string, w io.Writer) error {
	tw := tar.NewWriter(w)
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if rel == "." {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		link := ""
		if info.Mode()&fs.ModeSymlink != 0 {
			link, _ = os.Readlink(p)
		}
		h, err := tar.FileInfoHeader(info, link)
		if err != nil {
			return err
		}
		h.Name = filepath.ToSlash(rel)
		if d.IsDir() {
			h.Name += "/"
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if info.Mode().IsRegular() {
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			_, err = io.Copy(tw, f)
			f.Close()
			return err
		}
		return nil
	})
	if err != nil {
		return err
	}
	return tw.Close()
}
