// Package rehearsal installs a release tarball the way docs/ARM.md and
// docs/HUB.md say and runs the device and the hub from their systemd
// units inside bubblewrap sandboxes (no systemd runs in CI). Its test is
// `make rehearsal`; this file turns a unit file into a sandboxed command.
package rehearsal

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// Unit is what the rehearsal reads of a systemd service file: the
// settings that shape the process's world. Everything else in the file
// (Restart=, the Protect*/Restrict* syscall filters) is not emulated;
// the rehearsal's note says so.
type Unit struct {
	User, Group     string
	SupGroups       []string
	Env             []string // Environment=, in order
	EnvFiles        []string // EnvironmentFile=; a leading '-' means optional
	ExecStart       []string
	StateDirs       []string // StateDirectory= (names under /var/lib)
	StateMode       os.FileMode
	ReadWritePaths  []string // a leading '-' means "if it exists"
	ProtectStrict   bool
	ProtectHome     bool
	PrivateTmp      bool
	NoNewPrivileges bool
	MemoryMax       int64
}

// ParseUnit reads the [Service] settings the sandbox needs.
func ParseUnit(path string) (*Unit, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("unit: %w", err)
	}
	defer f.Close()
	u := &Unit{StateMode: 0o755}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == ';' || line[0] == '[' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("unit %s: %q is not Key=Value", path, line)
		}
		switch k {
		case "User":
			u.User = v
		case "Group":
			u.Group = v
		case "SupplementaryGroups":
			u.SupGroups = strings.Fields(v)
		case "Environment":
			u.Env = append(u.Env, strings.Fields(v)...)
		case "EnvironmentFile":
			u.EnvFiles = append(u.EnvFiles, v)
		case "ExecStart":
			u.ExecStart = strings.Fields(v)
		case "StateDirectory":
			u.StateDirs = strings.Fields(v)
		case "StateDirectoryMode":
			m, err := strconv.ParseUint(v, 8, 32)
			if err != nil {
				return nil, fmt.Errorf("unit %s: StateDirectoryMode %q: %w", path, v, err)
			}
			u.StateMode = os.FileMode(m)
		case "ReadWritePaths":
			u.ReadWritePaths = strings.Fields(v)
		case "ProtectSystem":
			u.ProtectStrict = v == "strict"
		case "ProtectHome":
			u.ProtectHome = v == "true" || v == "yes"
		case "PrivateTmp":
			u.PrivateTmp = v == "true" || v == "yes"
		case "NoNewPrivileges":
			u.NoNewPrivileges = v == "true" || v == "yes"
		case "MemoryMax":
			n, err := parseBytes(v)
			if err != nil {
				return nil, fmt.Errorf("unit %s: MemoryMax: %w", path, err)
			}
			u.MemoryMax = n
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("unit %s: %w", path, err)
	}
	if len(u.ExecStart) == 0 {
		return nil, fmt.Errorf("unit %s: no ExecStart", path)
	}
	return u, nil
}

func parseBytes(v string) (int64, error) {
	mult := int64(1)
	switch {
	case strings.HasSuffix(v, "K"):
		mult = 1 << 10
	case strings.HasSuffix(v, "M"):
		mult = 1 << 20
	case strings.HasSuffix(v, "G"):
		mult = 1 << 30
	}
	n, err := strconv.ParseInt(strings.TrimRight(v, "KMG"), 10, 64)
	return n * mult, err
}

// ReadEnvFile parses an EnvironmentFile the way systemd does for the
// simple forms the install writes: KEY=VALUE lines, # comments, optional
// quotes.
func ReadEnvFile(path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var env []string
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("%s: %q is not KEY=VALUE", path, line)
		}
		if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') && v[len(v)-1] == v[0] {
			v = v[1 : len(v)-1]
		}
		env = append(env, strings.TrimSpace(k)+"="+v)
	}
	return env, nil
}

// Root is a throwaway system: R/etc (a copy of the host's, where install.sh
// adds users and files), R/usr/local (where it installs), R/var/lib (state
// directories), R/media and R/mnt.
type Root struct {
	Dir string
}

// Account is a user of the throwaway root's /etc/passwd.
type Account struct {
	UID, GID int
	Home     string
}

// Lookup reads a user from R/etc/passwd.
func (r Root) Lookup(name string) (Account, error) {
	b, err := os.ReadFile(filepath.Join(r.Dir, "etc", "passwd"))
	if err != nil {
		return Account{}, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Split(line, ":")
		if len(f) >= 6 && f[0] == name {
			uid, err1 := strconv.Atoi(f[2])
			gid, err2 := strconv.Atoi(f[3])
			if err1 != nil || err2 != nil {
				return Account{}, fmt.Errorf("passwd: bad line for %s", name)
			}
			return Account{UID: uid, GID: gid, Home: f[5]}, nil
		}
	}
	return Account{}, fmt.Errorf("no user %s in %s/etc/passwd", name, r.Dir)
}

// Options change one start of a unit: Argv replaces ExecStart (an
// operator's `sudo -u USER outpost …` inside the same world), Binds puts
// host paths over sandbox paths (a second device's config), RW adds
// writable host paths at the same place inside.
type Options struct {
	Argv  []string
	Binds map[string]string // sandbox path → host path, read-only
	RW    []string          // sandbox paths under R made writable
	Env   []string          // after the unit's (an operator's shell)
	// StateRoot holds the state directories instead of R/var/lib (a
	// second device from the same install).
	StateRoot string
}

// Command builds the bwrap command line that runs the unit as systemd
// would: its user and groups, its environment (Environment=, then
// EnvironmentFile=, then STATE_DIRECTORY), a read-only system under
// ProtectSystem=strict with the state directories and ReadWritePaths
// writable, private /tmp, empty /home and /root, no new privileges. It
// creates the state directories as systemd does (owned by User=, mode
// StateDirectoryMode=).
func (r Root) Command(u *Unit, o Options) (*exec.Cmd, error) {
	acct, err := r.Lookup(u.User)
	if err != nil {
		return nil, err
	}
	env := []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin", "LANG=C.UTF-8",
		"HOME=" + acct.Home, "USER=" + u.User, "LOGNAME=" + u.User, "SHELL=/usr/sbin/nologin"}
	env = append(env, u.Env...)
	for _, f := range u.EnvFiles {
		optional := strings.HasPrefix(f, "-")
		f = strings.TrimPrefix(f, "-")
		vars, err := ReadEnvFile(filepath.Join(r.Dir, f))
		if err != nil {
			if optional && os.IsNotExist(err) {
				continue
			}
			return nil, fmt.Errorf("EnvironmentFile %s: %w", f, err)
		}
		env = append(env, vars...)
	}
	// A pid namespace: setpriv's change of user clears the parent-death
	// signal, so only the namespace's end takes the service down with the
	// test (systemd has the unit's cgroup for that).
	args := []string{"--die-with-parent", "--unshare-pid", "--ro-bind", "/usr", "/usr", "--ro-bind", filepath.Join(r.Dir, "usr", "local"), "/usr/local"}
	for _, d := range []string{"bin", "lib", "lib64", "sbin"} {
		if t, err := os.Readlink("/" + d); err == nil {
			args = append(args, "--symlink", t, "/"+d)
		} else if _, err := os.Stat("/" + d); err == nil {
			args = append(args, "--ro-bind", "/"+d, "/"+d)
		}
	}
	args = append(args, "--ro-bind", filepath.Join(r.Dir, "etc"), "/etc", "--dev-bind", "/dev", "/dev", "--proc", "/proc",
		"--ro-bind", "/sys", "/sys", "--tmpfs", "/run", "--tmpfs", "/var", "--dir", "/var/lib", "--tmpfs", "/var/tmp")
	if u.PrivateTmp {
		args = append(args, "--tmpfs", "/tmp")
	} else {
		args = append(args, "--bind", "/tmp", "/tmp")
	}
	if u.ProtectHome {
		args = append(args, "--tmpfs", "/home", "--tmpfs", "/root")
	}
	var states []string
	for _, s := range u.StateDirs {
		host := filepath.Join(r.Dir, "var", "lib", s)
		if o.StateRoot != "" {
			host = filepath.Join(o.StateRoot, s)
		}
		if err := os.MkdirAll(host, u.StateMode); err != nil {
			return nil, err
		}
		if err := os.Chown(host, acct.UID, acct.GID); err != nil {
			return nil, err
		}
		if err := os.Chmod(host, u.StateMode); err != nil {
			return nil, err
		}
		args = append(args, "--bind", host, "/var/lib/"+s)
		states = append(states, "/var/lib/"+s)
	}
	if len(states) > 0 {
		env = append(env, "STATE_DIRECTORY="+strings.Join(states, ":"))
	}
	rw := append([]string{}, o.RW...)
	for _, p := range u.ReadWritePaths {
		rw = append(rw, strings.TrimPrefix(p, "-"))
	}
	for _, p := range rw {
		host := filepath.Join(r.Dir, p)
		if _, err := os.Stat(host); err != nil {
			continue // "-": ignored when missing
		}
		args = append(args, "--bind", host, p)
	}
	for in, host := range o.Binds {
		// bwrap makes missing parents 0700: the service user could not
		// walk through them.
		args = append(args, "--dir", filepath.Dir(in), "--ro-bind", host, in)
	}
	if u.ProtectStrict {
		// /usr and /etc are read-only binds already; the tmpfs layers go
		// read-only last so the binds on them stay writable.
		args = append(args, "--remount-ro", "/var", "--remount-ro", "/run")
		if u.ProtectHome {
			args = append(args, "--remount-ro", "/home", "--remount-ro", "/root")
		}
	}
	args = append(args, "--chdir", "/")
	if u.User != "root" {
		args = append(args, "--", "setpriv", "--reuid", u.User, "--regid", groupOr(u.Group, u.User))
		if len(u.SupGroups) > 0 {
			args = append(args, "--groups", strings.Join(u.SupGroups, ","))
		} else {
			args = append(args, "--clear-groups")
		}
		if u.NoNewPrivileges {
			args = append(args, "--no-new-privs")
		}
		args = append(args, "--")
	} else {
		args = append(args, "--")
	}
	argv := u.ExecStart
	if o.Argv != nil {
		argv = o.Argv
	}
	for _, a := range argv {
		args = append(args, expand(a, env))
	}
	cmd := exec.Command("bwrap", args...)
	cmd.Env = append(env, o.Env...)
	return cmd, nil
}

func groupOr(g, u string) string {
	if g != "" {
		return g
	}
	return u
}

// expand replaces ${VAR} and $VAR in an ExecStart word, as systemd does.
func expand(s string, env []string) string {
	return os.Expand(s, func(k string) string {
		for i := len(env) - 1; i >= 0; i-- {
			if n, v, _ := strings.Cut(env[i], "="); n == k {
				return v
			}
		}
		return ""
	})
}
