package main

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/hyperhq/hyperd-go/api"
	"golang.org/x/term"
)

// Credentials are kept like docker's: ~/.hyper/config.json {"auths": {server: {"auth": base64(user:pass)}}}.
func configPath() string {
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".hyper", "config.json")
}

type authFile struct {
	Auths map[string]struct {
		Auth string `json:"auth"`
	} `json:"auths"`
}

func registryOf(ref string) string {
	if i := strings.IndexByte(ref, '/'); i > 0 {
		h := ref[:i]
		if strings.ContainsAny(h, ".:") || h == "localhost" {
			return h
		}
	}
	return "https://index.docker.io/v1/"
}

func loadAuth(ref string) *api.AuthConfig {
	b, err := os.ReadFile(configPath())
	if err != nil {
		return nil
	}
	var f authFile
	if json.Unmarshal(b, &f) != nil {
		return nil
	}
	e, ok := f.Auths[registryOf(ref)]
	if !ok {
		return nil
	}
	raw, err := base64.StdEncoding.DecodeString(e.Auth)
	if err != nil {
		return nil
	}
	u, p, _ := strings.Cut(string(raw), ":")
	return &api.AuthConfig{Username: u, Password: p, ServerAddress: registryOf(ref)}
}

func cmdLogin(x *cli, args []string) error {
	fs := newFlags("login")
	user := fs.String("u", "", "username")
	pass := fs.String("p", "", "password")
	email := fs.String("e", "", "email")
	if err := fs.Parse(args); err != nil {
		return err
	}
	server := "https://index.docker.io/v1/"
	if fs.NArg() > 0 {
		server = fs.Arg(0)
	}
	in := bufio.NewReader(os.Stdin)
	if *user == "" {
		fmt.Fprint(os.Stderr, "Username: ")
		l, _ := in.ReadString('\n')
		*user = strings.TrimSpace(l)
	}
	if *pass == "" {
		fmt.Fprint(os.Stderr, "Password: ")
		if term.IsTerminal(int(os.Stdin.Fd())) {
			b, err := term.ReadPassword(int(os.Stdin.Fd()))
			fmt.Fprintln(os.Stderr)
			if err != nil {
				return err
			}
			*pass = string(b)
		} else {
			l, _ := in.ReadString('\n')
			*pass = strings.TrimSpace(l)
		}
	}
	if *user == "" || *pass == "" {
		return errors.New("username and password are required")
	}
	st, err := x.c.Auth(ctx(), api.AuthConfig{Username: *user, Password: *pass, Email: *email, ServerAddress: server})
	if err != nil {
		return err
	}
	var f authFile
	if b, err := os.ReadFile(configPath()); err == nil {
		json.Unmarshal(b, &f)
	}
	if f.Auths == nil {
		f.Auths = map[string]struct {
			Auth string `json:"auth"`
		}{}
	}
	f.Auths[server] = struct {
		Auth string `json:"auth"`
	}{Auth: base64.StdEncoding.EncodeToString([]byte(*user + ":" + *pass))}
	os.MkdirAll(filepath.Dir(configPath()), 0o700)
	b, _ := json.MarshalIndent(f, "", "  ")
	if err := os.WriteFile(configPath(), b, 0o600); err != nil {
		return err
	}
	fmt.Fprintln(x.out, st)
	return nil
}
