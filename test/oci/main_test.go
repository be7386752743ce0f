// Package oci drives hutch-runtime through real container engines:
// rootless Podman as an unprivileged user created for the purpose, and
// containerd started by the test as root. Every container boots a real VM
// under QEMU.
package oci

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hutch-vm/hutch/internal/config"
	"github.com/hutch-vm/hutch/internal/guest"
	"github.com/hutch-vm/hutch/test/hostproc"
	"github.com/hutch-vm/hutch/test/ocitest"
	"github.com/hutch-vm/hutch/test/testproc"
)

// podmanUser runs the rootless Podman tests; nothing else runs as it, so
// a VMM of its left at the end is one hutch-runtime orphaned.
const podmanUser = "hutchoci1"

// The test image: busybox and a page for its httpd.
const (
	image     = "localhost/hutch-oci-test"
	imageUser = "localhost/hutch-oci-test-user" // USER 1234:1234
)

var (
	binDir      string // hutch-runtime and hutch-agent
	runtimeBin  string
	toolsDir    string // static programs containers run from a bind mount
	guestKernel string // the release the guest boots
	rootfsTar   string
	podman      *podmanRunner
)

func TestMain(m *testing.M) {
	testproc.Main()
	os.Exit(run(m))
}

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
		ldflags := ""
		if b == "hutch-agent" {
			ldflags = "-s -w" // as make build strips it
		}
		build := testproc.Command("go", "build", "-ldflags", ldflags, "-o", filepath.Join(binDir, b), "./cmd/"+b)
		build.Dir, build.Env = root, append(os.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			return fmt.Errorf("build %s: %v\n%s", b, err, out)
		}
	}
	runtimeBin = filepath.Join(binDir, "hutch-runtime")
	// The UDP echo server a container runs from a shared directory.
	toolsDir = filepath.Join(dir, "tools")
	os.Mkdir(toolsDir, 0o755)
	build := testproc.Command("go", "build", "-o", filepath.Join(toolsDir, "udpecho"), "./test/testguest/udpecho")
	build.Dir, build.Env = root, append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("build udpecho: %v\n%s", err, out)
	}
	var err error
	if _, guestKernel, err = guest.FindHostKernel("/boot", "/lib/modules"); err != nil {
		return err
	}
	rootfsTar = filepath.Join(dir, "rootfs.tar")
	if err := ocitest.WriteRootfs(rootfsTar); err != nil {
		return err
	}
	os.Chmod(rootfsTar, 0o644)
	u, err := ocitest.NewUser(podmanUser)
	if err != nil {
		return err
	}
	if err := testproc.StartReaper(testproc.Targets{UIDs: []int{u.UID}, ExeDirs: []string{binDir}, FirstUID: config.DefaultLeaseFirst, CountUID: config.DefaultLeaseCount}); err != nil {
		return err
	}
	podman = &podmanRunner{u}
	// A run killed earlier (with its reaper) leaves Podman's pause process
	// dead, and Podman refuses to go on until told to start afresh.
	podman.podman("system", "migrate").Run()
	if out, err := podman.podman("import", rootfsTar, image).CombinedOutput(); err != nil {
		return fmt.Errorf("podman import: %v: %s", err, out)
	}
	return nil
}

// vmms lists the user's QEMU processes still alive after grace.
// podmanRunner runs rootless Podman with hutch-runtime as its user.
type podmanRunner struct{ *ocitest.User }

func (p *podmanRunner) podman(args ...string) *exec.Cmd { return p.Podman(runtimeBin, args...) }

func (e *podmanRunner) vmms(grace time.Duration) []int {
	var left []int
	deadline := time.Now().Add(grace)
	for {
		left = qemuPids(func(st map[string]string) bool { return strings.Fields(st["Uid"])[0] == strconv.Itoa(e.UID) })
		if len(left) == 0 || time.Now().After(deadline) {
			return left
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// qemuPids lists live QEMU processes whose status passes keep.
func qemuPids(keep func(map[string]string) bool) []int { return pidsNamed("qemu-system", keep) }

// virtiofsdPids lists live virtiofsd processes whose status passes keep.
func virtiofsdPids(keep func(map[string]string) bool) []int { return pidsNamed("virtiofsd", keep) }

// pidsNamed lists live processes whose name starts with prefix and whose
// status passes keep.
func pidsNamed(prefix string, keep func(map[string]string) bool) []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, ent := range ents {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil {
			continue
		}
		st := procStatus(pid)
		if st == nil || !strings.HasPrefix(st["Name"], prefix) || !keep(st) {
			continue
		}
		pids = append(pids, pid)
	}
	return pids
}

// procStatus is the process's status; nil once it is gone.
func procStatus(pid int) map[string]string { return hostproc.Status(pid) }
