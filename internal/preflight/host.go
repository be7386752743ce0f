package preflight

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hutch-vm/hutch/internal/accel"
)

// Host is everything the checks learn about the machine. Every fact a
// check reads comes through it, so a test can fake any host, including
// ones this machine is not.
type Host interface {
	// Stat follows symlinks; Lstat does not.
	Stat(path string) (File, error)
	Lstat(path string) (File, error)
	ReadFile(path string) ([]byte, error)
	// ReadDir lists the names in a directory.
	ReadDir(path string) ([]string, error)
	// Access reports whether this process may use path in the way mode
	// says (the R_OK, W_OK, X_OK bits), judged by its effective ids.
	Access(path string, mode uint32) error
	// OpenRW opens path read-write and closes it again: for a device it
	// is the only sure test, since device cgroups and security modules
	// refuse opens that the mode allows.
	OpenRW(path string) error
	LookPath(name string) (string, error)
	// Output runs a program and returns what it printed on stdout.
	Output(name string, args ...string) (string, error)
	// User is who this process is.
	User() (User, error)
	Getenv(key string) string
	// KernelRelease is the running kernel's release (uname -r).
	KernelRelease() (string, error)
	// FSType is the filesystem magic of the mount at path (statfs f_type).
	FSType(path string) (int64, error)
	// ProbeKVM is the accelerator probe every VM start runs.
	ProbeKVM(device string) accel.Probe
}

// Access modes for Host.Access.
const (
	ReadOK  uint32 = 4
	WriteOK uint32 = 2
	ExecOK  uint32 = 1
)

// File is the part of a stat result the checks read.
type File struct {
	Mode     fs.FileMode // type and permission bits, setuid included
	UID, GID int
}

// User is the identity the checks are run for.
type User struct {
	UID int
	// Name is the login name, or the uid in decimal when the uid has no
	// passwd entry.
	Name string
	// GID is the primary group of the passwd entry, -1 without one.
	GID int
	// Groups are this process's effective and supplementary groups: what
	// the kernel checks, which is not /etc/group until the user logs in
	// again.
	Groups []int
}

// System is the real host.
func System() Host { return system{} }

type system struct{}

func (system) Stat(path string) (File, error)  { return stat(os.Stat, path) }
func (system) Lstat(path string) (File, error) { return stat(os.Lstat, path) }

func stat(fn func(string) (fs.FileInfo, error), path string) (File, error) {
	fi, err := fn(path)
	if err != nil {
		return File{}, err
	}
	f := File{Mode: fi.Mode(), UID: -1, GID: -1}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		f.UID, f.GID = int(st.Uid), int(st.Gid)
	}
	return f, nil
}

func (system) ReadFile(path string) ([]byte, error) { return os.ReadFile(path) }

func (system) ReadDir(path string) ([]string, error) {
	ents, err := os.ReadDir(path)
	names := make([]string, 0, len(ents))
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names, err
}

// The faccessat arguments syscall does not export: the working directory,
// and judging by the effective ids (as open does) rather than the real ones.
const (
	atFDCWD   = -0x64
	atEAccess = 0x200
)

func (system) Access(path string, mode uint32) error {
	if err := syscall.Faccessat(atFDCWD, path, mode, atEAccess); err != nil {
		return &fs.PathError{Op: "access", Path: path, Err: err}
	}
	return nil
}

func (system) OpenRW(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	return f.Close()
}

func (system) ProbeKVM(device string) accel.Probe { return accel.ProbeDevice(device) }

func (system) LookPath(name string) (string, error) { return exec.LookPath(name) }

// outputTimeout bounds a version query: a wedged binary must not hang
// the whole check.
const outputTimeout = 10 * time.Second

func (system) Output(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), outputTimeout)
	defer cancel()
	var out, errOut bytes.Buffer
	c := exec.CommandContext(ctx, name, args...)
	c.Stdout, c.Stderr = &out, &errOut
	if err := c.Run(); err != nil {
		if msg := strings.TrimSpace(errOut.String()); msg != "" {
			return out.String(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, firstLine(msg))
		}
		return out.String(), fmt.Errorf("%s %s: %w", name, strings.Join(args, " "), err)
	}
	return out.String(), nil
}

func (system) User() (User, error) {
	u := User{UID: os.Geteuid(), GID: -1}
	u.Name = strconv.Itoa(u.UID)
	if pw, err := user.LookupId(u.Name); err == nil {
		u.Name = pw.Username
		if gid, err := strconv.Atoi(pw.Gid); err == nil {
			u.GID = gid
		}
	}
	groups, err := os.Getgroups()
	if err != nil {
		return u, fmt.Errorf("read this process's groups: %w", err)
	}
	u.Groups = append(groups, os.Getegid())
	slices.Sort(u.Groups)
	u.Groups = slices.Compact(u.Groups)
	return u, nil
}

func (system) Getenv(key string) string { return os.Getenv(key) }

func (system) KernelRelease() (string, error) {
	var uts syscall.Utsname
	if err := syscall.Uname(&uts); err != nil {
		return "", fmt.Errorf("uname: %w", err)
	}
	var b strings.Builder
	for _, c := range uts.Release {
		if c == 0 {
			break
		}
		b.WriteByte(byte(c))
	}
	return b.String(), nil
}

func (system) FSType(path string) (int64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		return 0, &fs.PathError{Op: "statfs", Path: path, Err: err}
	}
	return int64(st.Type), nil
}
