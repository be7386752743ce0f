// Package cloud boots a real Debian 12 cloud guest with hutch as an
// unprivileged user: cloud-init seeded by hutch, ssh and cp over the
// forwarded port, the local image cache, and the errors around them.
package cloud

import (
	"fmt"
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

	"github.com/hutch-vm/hutch/test/testproc"
)

// cloudUser runs hutch in these tests. It exists for them alone, so a
// process of its left at the end is one hutch orphaned.
const cloudUser = "hutchcloud1"

var (
	hutchBin string
	debian   debianGuest
)

func TestMain(m *testing.M) {
	testproc.Main()
	os.Exit(run(m))
}

func run(m *testing.M) int {
	fail := func(format string, a ...any) int {
		fmt.Fprintf(os.Stderr, "cloud: "+format+"\n", a...)
		return 1
	}
	if os.Geteuid() != 0 {
		return fail("these tests must run as root: they build a guest with debootstrap and create the user %s; run them with sudo", cloudUser)
	}
	for _, tool := range []string{"qemu-system-x86_64", "qemu-img", "useradd", "debootstrap", "mke2fs", "ssh", "scp", "ssh-keygen"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fail("%s is missing: install the packages of the Makefile's PACKAGES line (make deps)", tool)
		}
	}
	if _, err := user.Lookup(cloudUser); err != nil {
		if out, err := testproc.Command("useradd", "--create-home", "--shell", "/bin/sh", cloudUser).CombinedOutput(); err != nil {
			return fail("useradd %s: %v: %s", cloudUser, err, out)
		}
	}
	dir, err := os.MkdirTemp("", "hutch-cloud-")
	if err != nil {
		return fail("%v", err)
	}
	defer os.RemoveAll(dir)
	os.Chmod(dir, 0o755)
	cu, _ := user.Lookup(cloudUser)
	uid, _ := strconv.Atoi(cu.Uid)
	if err := testproc.StartReaper(testproc.Targets{UIDs: []int{uid}, ExeDirs: []string{dir}}); err != nil {
		return fail("%v", err)
	}
	hutchBin = filepath.Join(dir, "hutch")
	_, here, _, _ := runtime.Caller(0)
	build := testproc.Command("go", "build", "-o", hutchBin, "./cmd/hutch")
	build.Dir = filepath.Join(filepath.Dir(here), "..", "..")
	if out, err := build.CombinedOutput(); err != nil {
		return fail("build hutch: %v\n%s", err, out)
	}
	cache := os.Getenv("HUTCH_TEST_CACHE")
	if cache == "" {
		cache = "/var/tmp/hutch-test-cache"
	}
	if debian, err = buildDebian(cache); err != nil {
		return fail("build the Debian guest: %v", err)
	}
	code := m.Run()
	if left := userProcs(); len(left) > 0 {
		fmt.Fprintf(os.Stderr, "cloud: processes of %s outlived the tests (orphaned by hutch):\n  %s\n", cloudUser, strings.Join(left, "\n  "))
		for _, l := range left {
			pid, _ := strconv.Atoi(strings.Fields(l)[0])
			syscall.Kill(pid, syscall.SIGKILL)
		}
		code = max(code, 1)
	}
	return code
}

// userProcs lists the live processes of cloudUser as "pid cmdline".
func userProcs() []string {
	u, err := user.Lookup(cloudUser)
	if err != nil {
		return nil
	}
	var procs []string
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		var st syscall.Stat_t
		if syscall.Stat("/proc/"+e.Name(), &st) != nil || strconv.Itoa(int(st.Uid)) != u.Uid {
			continue
		}
		status, _ := os.ReadFile("/proc/" + e.Name() + "/status")
		if strings.Contains(string(status), "State:\tZ") {
			continue
		}
		cmd, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		procs = append(procs, fmt.Sprintf("%d %s", pid, strings.ReplaceAll(string(cmd), "\x00", " ")))
	}
	return procs
}

// vmUser is cloudUser with a private hutch state for one test.
type vmUser struct {
	t        *testing.T
	uid, gid int
	home     string
	dir      string // the test's own directory, owned by the user
	env      []string
}

func newVMUser(t *testing.T) *vmUser {
	t.Helper()
	u, err := user.Lookup(cloudUser)
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	dir, err := os.MkdirTemp("", "hutch-cloud-"+t.Name()+"-")
	if err != nil {
		t.Fatal(err)
	}
	vu := &vmUser{t: t, uid: uid, gid: gid, home: u.HomeDir, dir: dir}
	for _, d := range []string{dir, vu.path("run"), vu.path("data"), vu.path("cache"), vu.path("files")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(d, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	vu.env = []string{"HOME=" + u.HomeDir, "USER=" + cloudUser, "PATH=/usr/local/bin:/usr/bin:/bin",
		"XDG_RUNTIME_DIR=" + vu.path("run"), "XDG_DATA_HOME=" + vu.path("data"), "XDG_CACHE_HOME=" + vu.path("cache")}
	t.Cleanup(func() {
		if out := vu.run("ps", "-a", "--format", "json"); out.code == 0 && strings.Contains(out.stdout, `"name"`) {
			for _, n := range vmNames(out.stdout) {
				vu.run("rm", "-f", n)
			}
		}
		if !t.Failed() {
			os.RemoveAll(dir)
		} else {
			t.Logf("state kept for a look: %s", dir)
		}
	})
	return vu
}

func (u *vmUser) path(name string) string { return filepath.Join(u.dir, name) }

type result struct {
	stdout, stderr string
	code           int
}

func (r result) String() string {
	return fmt.Sprintf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
}

// run runs hutch as the user, without a terminal.
func (u *vmUser) run(args ...string) result {
	u.t.Helper()
	cmd := testproc.Command(hutchBin, args...)
	cmd.Env = u.env
	cmd.Dir = u.path("files")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(u.uid), Gid: uint32(u.gid), Groups: []uint32{}}}
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		u.t.Fatalf("run hutch %v: %v", args, err)
	}
	return r
}

// must runs hutch and fails the test unless it succeeds.
func (u *vmUser) must(args ...string) string {
	u.t.Helper()
	r := u.run(args...)
	if r.code != 0 {
		u.t.Fatalf("hutch %s: %s", strings.Join(args, " "), r)
	}
	return r.stdout
}

// writeFile writes a file the user owns in its files dir.
func (u *vmUser) writeFile(name, data string, mode os.FileMode) string {
	u.t.Helper()
	p := u.path("files/" + name)
	if err := os.WriteFile(p, []byte(data), mode); err != nil {
		u.t.Fatal(err)
	}
	if err := os.Chown(p, u.uid, u.gid); err != nil {
		u.t.Fatal(err)
	}
	return p
}

// waitLogin waits until hutch ssh logs in to name, as run --wait does for
// a new VM: after start, the guest boots again before its sshd answers.
func (u *vmUser) waitLogin(name string) {
	u.t.Helper()
	deadline := time.Now().Add(15 * time.Minute)
	for {
		r := u.run("ssh", name, "--", "true")
		if r.code == 0 {
			return
		}
		if time.Now().After(deadline) {
			u.t.Fatalf("no ssh login to %s after start: %s", name, r)
		}
		time.Sleep(3 * time.Second)
	}
}
