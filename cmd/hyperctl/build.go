package main

import (
	"archive/tar"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

func cmdBuild(x *cli, args []string) error {
	f := newFlags("build")
	var tags multi
	f.Var(&tags, "t", "name[:tag] of the result (repeatable)")
	dockerfile := f.String("f", "", "Dockerfile path inside the context")
	if err := parseArgs(f, args, 1, 1); err != nil {
		return err
	}
	dir := f.Arg(0)
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(tarDir(dir, pw)) }()
	return x.c.Build(ctx(), pr, tags, *dockerfile, x.progress)
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
