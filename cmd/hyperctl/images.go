package main

// images.go owns the image commands: images, pull, push, rmi, load and save
// (build is build.go's, login auth.go's).

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"
)

func cmdImages(x *cli, args []string) error {
	fs := newFlags("images")
	all := fs.Bool("a", false, "all images")
	if err := fs.Parse(args); err != nil {
		return err
	}
	list, err := x.c.Images(ctx(), *all)
	if err != nil {
		return err
	}
	var rows [][]string
	type img struct{ Repository, Tag, ID, Created, Size string }
	var imgs []img
	for _, s := range list {
		// repo may contain ':' (registry port): split from the right
		p := strings.Split(s, ":")
		if len(p) < 5 {
			continue
		}
		n := len(p)
		im := img{Repository: strings.Join(p[:n-4], ":"), Tag: p[n-4], ID: p[n-3], Created: p[n-2], Size: p[n-1]}
		imgs = append(imgs, im)
		created := im.Created
		if sec, err := strconv.ParseInt(im.Created, 10, 64); err == nil {
			created = time.Unix(sec, 0).UTC().Format("2006-01-02 15:04:05")
		}
		size := im.Size
		if b, err := strconv.ParseInt(im.Size, 10, 64); err == nil {
			size = humanSize(b)
		}
		rows = append(rows, []string{im.Repository, im.Tag, shortID(im.ID), created, size})
	}
	return x.show(imgs, []string{"REPOSITORY", "TAG", "IMAGE ID", "CREATED", "VIRTUAL SIZE"}, rows)
}

func humanSize(b int64) string {
	f := float64(b)
	for _, u := range []string{"B", "kB", "MB", "GB"} {
		if f < 1000 {
			return fmt.Sprintf("%.3g %s", f, u)
		}
		f /= 1000
	}
	return fmt.Sprintf("%.3g TB", f)
}

func cmdPull(x *cli, args []string) error {
	return forEach(args, 1, func(ref string) error { return x.c.Pull(ctx(), ref, loadAuth(ref), x.progress()) })
}

func cmdPush(x *cli, args []string) error {
	return forEach(args, 1, func(ref string) error { return x.c.Push(ctx(), ref, loadAuth(ref), x.progress()) })
}

func cmdRmi(x *cli, args []string) error {
	fs := newFlags("rmi")
	force := fs.Bool("f", false, "force")
	noprune := fs.Bool("no-prune", false, "do not delete untagged parents")
	if err := fs.Parse(args); err != nil {
		return err
	}
	return forEach(fs.Args(), 1, func(ref string) error {
		items, err := x.c.RemoveImage(ctx(), ref, *force, *noprune)
		if err != nil {
			return err
		}
		for _, it := range items {
			if it.Untagged != "" {
				fmt.Fprintln(x.out, "Untagged:", it.Untagged)
			}
			if it.Deleted != "" {
				fmt.Fprintln(x.out, "Deleted:", it.Deleted)
			}
		}
		return nil
	})
}

func cmdLoad(x *cli, args []string) error {
	fs := newFlags("load")
	in := fs.String("i", "", "tar file (default stdin)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var r io.Reader = os.Stdin
	if *in != "" {
		f, err := os.Open(*in)
		if err != nil {
			return err
		}
		defer f.Close()
		r = f
	}
	names, err := x.c.Load(ctx(), r)
	if err != nil {
		return err
	}
	for _, n := range names {
		fmt.Fprintln(x.out, "Loaded image:", n)
	}
	return nil
}

func cmdSave(x *cli, args []string) error {
	fs := newFlags("save")
	out := fs.String("o", "", "output file (default stdout)")
	if err := parseArgs(fs, args, 1, -1); err != nil {
		return err
	}
	var w io.Writer = os.Stdout
	if *out != "" {
		f, err := os.Create(*out)
		if err != nil {
			return err
		}
		defer f.Close()
		w = f
	}
	return x.c.Save(ctx(), fs.Args(), w)
}
