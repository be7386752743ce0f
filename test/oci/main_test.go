// Package oci drives hutch-runtime through real container engines:
// rootless Podman as an unprivileged user created for the purpose, and
// containerd started by the test as root. Every container boots a real VM
// under QEMU.
package oci

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hutch-vm/hutch/internal/guest"
)

// podmanUser runs the rootless Podman tests; nothing else runs as it, so
// a VMM of its left at the end is one hutch-runtime orphaned.
const podmanUser = "hutchoci1"

// The test image: busybox and a page for its httpd.
const (
	image     = "localhost/hutch-oci-test"
	imageUser = "localhost/hutch-oci-test-user" // USER 1234:1234
	pageText  = "hello from a container in a VM"
)

var (
	binDir      string // hutch-runtime and hutch-agent
	runtimeBin  string
	guestKernel string // the release the guest boots
	rootfsTar   string
	podman      *engineUser
)

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "oci: these tests must run as root: they create a user for rootless Podman and start containerd; run them with sudo")
		return 1
	}
	for _, tool := range []string{"podman", "containerd", "ctr", "conmon", "slirp4netns", "newuidmap", "qemu-system-x86_64", "mke2fs", "nsenter", "useradd"} {
		if _, err := exec.LookPath(tool); err != nil {
			fmt.Fprintf(os.Stderr, "oci: %s is missing: install the packages .ci/run installs (make deps)\n", tool)
			return 1
		}
	}
	dir, err := os.MkdirTemp("", "hutch-oci-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "oci:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	os.Chmod(dir, 0o755)
	if err := setup(dir); err != nil {
		fmt.Fprintln(os.Stderr, "oci:", err)
		return 1
	}
	code := m.Run()
	if left := podman.vmms(5 * time.Second); len(left) > 0 {
		fmt.Fprintf(os.Stderr, "oci: VMMs of %s outlived the tests (orphaned by hutch-runtime): %v\n", podmanUser, left)
		for _, pid := range left {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		if code == 0 {
			code = 1
		}
	}
	return code
}

func setup(dir string) error {
	binDir = filepath.Join(dir, "bin")
	os.Mkdir(binDir, 0o755)
	_, here, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(here), "..", "..")
	for _, b := range []string{"hutch-runtime", "hutch-agent"} {
		build := exec.Command("go", "build", "-o", filepath.Join(binDir, b), "./cmd/"+b)
		build.Dir, build.Env = root, append(os.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			return fmt.Errorf("build %s: %v\n%s", b, err, out)
		}
	}
	runtimeBin = filepath.Join(binDir, "hutch-runtime")
	var err error
	if _, guestKernel, err = guest.FindHostKernel("/boot", "/lib/modules"); err != nil {
		return err
	}
	rootfsTar = filepath.Join(dir, "rootfs.tar")
	if err := writeRootfs(rootfsTar); err != nil {
		return err
	}
	os.Chmod(rootfsTar, 0o644)
	if podman, err = newEngineUser(podmanUser); err != nil {
		return err
	}
	if out, err := podman.podman("import", rootfsTar, image).CombinedOutput(); err != nil {
		return fmt.Errorf("podman import: %v: %s", err, out)
	}
	return nil
}

// writeRootfs writes the image's root: the host's static busybox with a
// link per applet, and a page.
func writeRootfs(path string) error {
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
		"www/index.html": pageText + "\n",
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

// engineUser is the unprivileged user rootless Podman runs as.
type engineUser struct {
	name          string
	uid, gid      int
	home, runtime string
}

func newEngineUser(name string) (*engineUser, error) {
	if _, err := user.Lookup(name); err != nil {
		if out, err := exec.Command("useradd", "--create-home", "--shell", "/bin/sh", name).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("useradd %s: %v: %s", name, err, out)
		}
	}
	u, err := user.Lookup(name)
	if err != nil {
		return nil, err
	}
	e := &engineUser{name: name, home: u.HomeDir}
	e.uid, _ = strconv.Atoi(u.Uid)
	e.gid, _ = strconv.Atoi(u.Gid)
	// Rootless Podman maps the container's ids onto the user's subordinate
	// ranges.
	for _, f := range []string{"/etc/subuid", "/etc/subgid"} {
		b, _ := os.ReadFile(f)
		if !strings.Contains(string(b), name+":") {
			flag := "--add-subuids"
			if strings.HasSuffix(f, "subgid") {
				flag = "--add-subgids"
			}
			base := 1000000 + e.uid*65536
			if out, err := exec.Command("usermod", flag, fmt.Sprintf("%d-%d", base, base+65535), name).CombinedOutput(); err != nil {
				return nil, fmt.Errorf("usermod %s %s: %v: %s", flag, name, err, out)
			}
		}
	}
	// No login session makes the runtime dir: make it as logind would.
	e.runtime = fmt.Sprintf("/run/user/%d", e.uid)
	if err := os.MkdirAll(e.runtime, 0o700); err != nil {
		return nil, err
	}
	os.Chown(e.runtime, e.uid, e.gid)
	return e, nil
}

func (e *engineUser) env() []string {
	return []string{"HOME=" + e.home, "USER=" + e.name, "LOGNAME=" + e.name, "XDG_RUNTIME_DIR=" + e.runtime,
		"PATH=/usr/local/bin:/usr/bin:/bin"}
}

// podman is a rootless Podman command using hutch-runtime, with cgroupfs
// (crun and systemd refuse this host's hybrid cgroups for rootless use).
func (e *engineUser) podman(args ...string) *exec.Cmd {
	full := append([]string{"--cgroup-manager=cgroupfs", "--events-backend=file", "--runtime", runtimeBin}, args...)
	c := exec.Command("podman", full...)
	c.Env, c.Dir = e.env(), e.home
	c.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(e.uid), Gid: uint32(e.gid), Groups: []uint32{}}}
	return c
}

// vmms lists the user's QEMU processes still alive after grace.
func (e *engineUser) vmms(grace time.Duration) []int {
	var left []int
	deadline := time.Now().Add(grace)
	for {
		left = qemuPids(func(st map[string]string) bool { return strings.Fields(st["Uid"])[0] == strconv.Itoa(e.uid) })
		if len(left) == 0 || time.Now().After(deadline) {
			return left
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// qemuPids lists live QEMU processes whose status passes keep.
func qemuPids(keep func(map[string]string) bool) []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, ent := range ents {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil {
			continue
		}
		st := procStatus(pid)
		if st == nil || !strings.HasPrefix(st["Name"], "qemu-system") || !keep(st) {
			continue
		}
		pids = append(pids, pid)
	}
	return pids
}

// procStatus reads /proc/<pid>/status; nil for a gone or zombie process.
func procStatus(pid int) map[string]string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return nil
	}
	m := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			m[k] = strings.TrimSpace(v)
		}
	}
	if strings.HasPrefix(m["State"], "Z") {
		return nil
	}
	return m
}
