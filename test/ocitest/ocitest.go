// Package ocitest prepares what tests and benchmarks of hutch-runtime
// share: a busybox image root and a user for rootless Podman.
package ocitest

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"strconv"
	"strings"
	"syscall"

	"github.com/hutch-vm/hutch/internal/guest"
	"github.com/hutch-vm/hutch/test/testproc"
)

// PageText is what the image's web page says.
const PageText = "hello from a container in a VM"

// WriteRootfs writes the image's root: the host's static busybox with a
// link per applet, and a page.
func WriteRootfs(path string) error {
	bb := "/bin/busybox"
	applets, err := guest.BusyboxApplets(bb)
	if err != nil {
		return fmt.Errorf("the test image needs a static busybox (apt-get install busybox-static): %w", err)
	}
	data, err := os.ReadFile(bb)
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, d := range []string{"bin", "etc", "www", "tmp", "root", "proc", "sys", "dev", "run"} {
		tw.WriteHeader(&tar.Header{Name: d + "/", Typeflag: tar.TypeDir, Mode: 0o755})
	}
	tw.WriteHeader(&tar.Header{Name: "bin/busybox", Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(data))})
	tw.Write(data)
	for _, a := range applets {
		if a != "busybox" {
			tw.WriteHeader(&tar.Header{Name: "bin/" + a, Typeflag: tar.TypeSymlink, Linkname: "busybox"})
		}
	}
	for name, content := range map[string]string{
		"www/index.html": PageText + "\n",
		"etc/passwd":     "root:x:0:0:root:/root:/bin/sh\nuser:x:1234:1234::/tmp:/bin/sh\n",
		"etc/group":      "root:x:0:\nuser:x:1234:\n",
	} {
		tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(content))})
		io.WriteString(tw, content)
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return os.WriteFile(path, buf.Bytes(), 0o644)
}

// User is an unprivileged user rootless Podman runs as, made ready for
// it: subordinate ids and a runtime dir, as a login would give.
type User struct {
	Name          string
	UID, GID      int
	Home, Runtime string
}

func NewUser(name string) (*User, error) {
	if _, err := user.Lookup(name); err != nil {
		if out, err := testproc.Command("useradd", "--create-home", "--shell", "/bin/sh", name).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("useradd %s: %v: %s", name, err, out)
		}
	}
	u, err := user.Lookup(name)
	if err != nil {
		return nil, err
	}
	e := &User{Name: name, Home: u.HomeDir}
	e.UID, _ = strconv.Atoi(u.Uid)
	e.GID, _ = strconv.Atoi(u.Gid)
	// Rootless Podman maps the container's ids onto the user's subordinate
	// ranges.
	for _, f := range []string{"/etc/subuid", "/etc/subgid"} {
		b, _ := os.ReadFile(f)
		if !strings.Contains(string(b), name+":") {
			flag := "--add-subuids"
			if strings.HasSuffix(f, "subgid") {
				flag = "--add-subgids"
			}
			base := 1000000 + e.UID*65536
			if out, err := testproc.Command("usermod", flag, fmt.Sprintf("%d-%d", base, base+65535), name).CombinedOutput(); err != nil {
				return nil, fmt.Errorf("usermod %s %s: %v: %s", flag, name, err, out)
			}
		}
	}
	// No login session makes the runtime dir: make it as logind would.
	e.Runtime = fmt.Sprintf("/run/user/%d", e.UID)
	if err := os.MkdirAll(e.Runtime, 0o700); err != nil {
		return nil, err
	}
	os.Chown(e.Runtime, e.UID, e.GID)
	return e, nil
}

// Env is the user's environment for Podman.
func (e *User) Env() []string {
	return []string{"HOME=" + e.Home, "USER=" + e.Name, "LOGNAME=" + e.Name, "XDG_RUNTIME_DIR=" + e.Runtime,
		"PATH=/usr/local/bin:/usr/bin:/bin"}
}

// Podman is a rootless Podman command with the given OCI runtime, and
// cgroupfs (crun and systemd refuse hybrid cgroup hosts for rootless use).
func (e *User) Podman(runtime string, args ...string) *exec.Cmd {
	full := append([]string{"--cgroup-manager=cgroupfs", "--events-backend=file", "--runtime", runtime}, args...)
	c := testproc.Command("podman", full...)
	c.Env, c.Dir = e.Env(), e.Home
	c.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(e.UID), Gid: uint32(e.GID), Groups: []uint32{}}}
	return c
}
