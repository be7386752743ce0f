package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hutch-vm/hutch/test/testproc"
)

// bootTimeout is generous: the guest boots in seconds under TCG, but CI
// machines are shared and two VMs may boot at once.
const bootTimeout = 120 * time.Second

// tUser is one test user with a fresh, private hutch state for one test.
type tUser struct {
	t        *testing.T
	name     string
	uid, gid int
	home     string
	env      []string
	runDir   string // XDG_RUNTIME_DIR
	dataDir  string // XDG_DATA_HOME
	// groups are the supplementary groups hutch runs with; none unless a
	// test grants one (kvm).
	groups []uint32
}

// newUser gives a test its own XDG dirs for user n and, at cleanup,
// removes every VM the test left and checks none of its processes stayed.
func newUser(t *testing.T, n string) *tUser {
	t.Helper()
	u, err := user.Lookup(n)
	if err != nil {
		t.Fatalf("test user %s: %v", n, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	base := openDir(t)
	tu := &tUser{t: t, name: n, uid: uid, gid: gid, home: u.HomeDir,
		runDir: filepath.Join(base, "run"), dataDir: filepath.Join(base, "data")}
	for _, d := range []string{tu.runDir, tu.dataDir} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(d, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	tu.env = []string{"HOME=" + u.HomeDir, "PATH=/usr/local/bin:/usr/bin:/bin", "XDG_RUNTIME_DIR=" + tu.runDir, "XDG_DATA_HOME=" + tu.dataDir}
	t.Cleanup(tu.cleanup)
	return tu
}

type result struct {
	out, err string
	code     int
}

func (r result) String() string {
	return fmt.Sprintf("exit %d, stdout %q, stderr %q", r.code, r.out, r.err)
}

// cmd is hutch as this user, not yet started.
func (u *tUser) cmd(args ...string) *exec.Cmd {
	c := testproc.Command(hutchBin, args...)
	c.Env = u.env
	c.Dir = "/"
	groups := u.groups
	if groups == nil {
		groups = []uint32{}
	}
	c.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(u.uid), Gid: uint32(u.gid), Groups: groups}}
	return c
}

func (u *tUser) run(args ...string) result {
	u.t.Helper()
	return u.runCmd(u.cmd(args...))
}

func (u *tUser) runCmd(c *exec.Cmd) result {
	u.t.Helper()
	var o, e bytes.Buffer
	c.Stdout, c.Stderr = &o, &e
	err := c.Run()
	r := result{out: o.String(), err: e.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		u.t.Fatalf("hutch %v: %v", c.Args[1:], err)
	}
	return r
}

// ok runs hutch and fails the test unless it exits 0.
func (u *tUser) ok(args ...string) string {
	u.t.Helper()
	r := u.run(args...)
	if r.code != 0 {
		u.t.Fatalf("hutch %s: %v", strings.Join(args, " "), r)
	}
	return r.out
}

// view is the part of `hutch inspect` the tests read.
type view struct {
	Name          string `json:"name"`
	State         string `json:"state"`
	Pid           int    `json:"pid"`
	SupervisorPid int    `json:"supervisorPid"`
	UID           int    `json:"uid"`
	GID           int    `json:"gid"`
	Groups        []int  `json:"groups"`
	RuntimeDir    string `json:"runtimeDir"`
	Accel         string `json:"accel"`
	AccelReason   string `json:"accelReason"`
	Restart       string `json:"restart"`
	Warning       string `json:"warning"`
	GuestIP       string `json:"guestIP"`
	Restarts      int    `json:"restarts"`
	Disks         []struct {
		Source string `json:"source"`
		Chain  []struct {
			Path   string `json:"path"`
			Format string `json:"format"`
		} `json:"chain"`
	} `json:"disks"`
	Network      string   `json:"network"`
	NetworkError string   `json:"networkError"`
	PasstPid     int      `json:"passtPid"`
	Created      string   `json:"created"`
	ExitCode     *int     `json:"exitCode"`
	Reason       string   `json:"reason"`
	Command      []string `json:"command"`
	Descriptors  []struct {
		Kind  string `json:"kind"`
		Path  string `json:"path"`
		Write bool   `json:"write"`
	} `json:"descriptors"`
	Ports []struct {
		HostIP    string `json:"hostIP"`
		HostPort  int    `json:"hostPort"`
		GuestPort int    `json:"guestPort"`
		Protocol  string `json:"protocol"`
	} `json:"ports"`
}

func (u *tUser) inspect(name string) view {
	u.t.Helper()
	var v view
	out := u.ok("inspect", name)
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		u.t.Fatalf("inspect %s: %v: %s", name, err, out)
	}
	return v
}

func (u *tUser) ps(all bool) []view {
	u.t.Helper()
	args := []string{"ps", "--format", "json"}
	if all {
		args = append(args, "-a")
	}
	var vs []view
	out := u.ok(args...)
	if err := json.Unmarshal([]byte(out), &vs); err != nil {
		u.t.Fatalf("ps: %v: %s", err, out)
	}
	return vs
}

// runGuest starts the test guest detached with one forwarded port and
// returns that host port.
func (u *tUser) runGuest(name string, extra ...string) int {
	u.t.Helper()
	port := freePort(u.t)
	args := append([]string{"run", "-d", "--name", name, "--memory", "256M",
		"--kernel", guest.Kernel, "--initrd", guest.Initrd, "--append", "console=ttyS0",
		"-p", fmt.Sprintf("127.0.0.1:%d:80", port)}, extra...)
	if out := strings.TrimSpace(u.ok(args...)); out != name {
		u.t.Fatalf("run -d printed %q, want the name %q", out, name)
	}
	return port
}

// cleanup removes what the test left and checks nothing of it survives.
func (u *tUser) cleanup() {
	var vs []view
	out, _ := u.cmd("ps", "-a", "--format", "json").Output()
	json.Unmarshal(out, &vs)
	for _, v := range vs {
		u.cmd("rm", "-f", v.Name).Run()
		for _, pid := range []int{v.Pid, v.SupervisorPid} {
			if pid > 0 && procStatus(pid) != nil && !waitFor(5*time.Second, func() bool { return procStatus(pid) == nil }) {
				u.t.Errorf("pid %d of vm %s still runs after rm -f", pid, v.Name)
			}
		}
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitPage waits for the guest's web server behind a forwarded port.
func waitPage(t *testing.T, port int) string {
	t.Helper()
	var body string
	client := http.Client{Timeout: 3 * time.Second}
	ok := waitFor(bootTimeout, func() bool {
		resp, err := client.Get(fmt.Sprintf("http://127.0.0.1:%d/", port))
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var b bytes.Buffer
		b.ReadFrom(resp.Body)
		body = b.String()
		return resp.StatusCode == 200
	})
	if !ok {
		t.Fatalf("the guest's page on 127.0.0.1:%d did not answer within %s", port, bootTimeout)
	}
	return body
}

// waitLog waits until the VM's console log holds want.
func (u *tUser) waitLog(name, want string) {
	u.t.Helper()
	var last string
	if !waitFor(bootTimeout, func() bool {
		last = u.run("logs", name).out
		return strings.Contains(last, want)
	}) {
		u.t.Fatalf("console of %s never showed %q; it shows:\n%s", name, want, tail(last, 2000))
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// tree lists every path under the user's hutch state, to show that a
// refused command changed nothing.
func (u *tUser) tree() string {
	var b strings.Builder
	for _, root := range []string{u.runDir, u.dataDir} {
		filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
			if err == nil && !strings.HasSuffix(p, ".lock") {
				fmt.Fprintln(&b, p)
			}
			return nil
		})
	}
	return b.String()
}

// openDir is a temp dir the test users can enter (t.TempDir's parent is
// private to root).
func openDir(t *testing.T) string {
	t.Helper()
	d := t.TempDir()
	os.Chmod(filepath.Dir(d), 0o755)
	os.Chmod(d, 0o755)
	return d
}
