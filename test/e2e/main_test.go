// Package e2e drives the hutch binary for real: QEMU booting the test
// guest, as unprivileged users created for the purpose.
package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/hutch-vm/hutch/internal/config"
	"github.com/hutch-vm/hutch/test/hostproc"
	"github.com/hutch-vm/hutch/test/testguest"
	"github.com/hutch-vm/hutch/test/testproc"
)

// The unprivileged users the tests run hutch as. They exist only for the
// tests; nothing else runs as them, so any process of theirs left at the
// end is something hutch orphaned.
var testUsers = []string{"hutchtest1", "hutchtest2"}

var (
	hutchBin string
	guest    testguest.Guest
)

func TestMain(m *testing.M) {
	testproc.Main()
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "e2e: these tests must run as root: they create unprivileged users (useradd) and run hutch as them; run them with sudo")
		return 1
	}
	for _, tool := range []string{"qemu-system-x86_64", "qemu-img", "useradd", "socat"} {
		if _, err := exec.LookPath(tool); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: %s is missing: install the packages .ci/run installs\n", tool)
			return 1
		}
	}
	for _, u := range testUsers {
		if _, err := user.Lookup(u); err != nil {
			if out, err := testproc.Command("useradd", "--create-home", "--shell", "/bin/sh", u).CombinedOutput(); err != nil {
				fmt.Fprintf(os.Stderr, "e2e: useradd %s: %v: %s\n", u, err, out)
				return 1
			}
		}
	}
	dir, err := os.MkdirTemp("", "hutch-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	os.Chmod(dir, 0o755)
	targets := testproc.Targets{ExeDirs: []string{dir}, FirstUID: config.DefaultLeaseFirst, CountUID: config.DefaultLeaseCount}
	for _, n := range testUsers {
		u, _ := user.Lookup(n)
		uid, _ := strconv.Atoi(u.Uid)
		targets.UIDs = append(targets.UIDs, uid)
	}
	if err := testproc.StartReaper(targets); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	hutchBin = filepath.Join(dir, "hutch")
	_, here, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(here), "..", "..")
	build := testproc.Command("go", "build", "-o", hutchBin, "./cmd/hutch")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: build hutch: %v\n%s", err, out)
		return 1
	}
	cache := os.Getenv("HUTCH_TEST_CACHE")
	if cache == "" {
		cache = "/var/tmp/hutch-test-cache"
	}
	if guest, err = testguest.Build(cache); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: build the test guest:", err)
		return 1
	}
	code := m.Run()
	if left := leftovers(); left != "" {
		fmt.Fprintf(os.Stderr, "e2e: processes of the test users outlived the tests (orphaned by hutch):\n%s", left)
		killLeftovers()
		if code == 0 {
			code = 1
		}
	}
	return code
}

// leftovers lists processes owned by the test users.
func leftovers() string {
	var b strings.Builder
	for _, pid := range userPids() {
		cmd, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
		fmt.Fprintf(&b, "  pid %d: %s\n", pid, strings.ReplaceAll(string(cmd), "\x00", " "))
	}
	return b.String()
}

func killLeftovers() {
	for _, pid := range userPids() {
		p, _ := os.FindProcess(pid)
		p.Kill()
	}
}

func userPids() []int {
	uids := map[string]bool{}
	for _, n := range testUsers {
		if u, err := user.Lookup(n); err == nil {
			uids[u.Uid] = true
		}
	}
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if uid, ok := procStatus(pid)["Uid"]; ok && uids[strings.Fields(uid)[0]] {
			pids = append(pids, pid)
		}
	}
	return pids
}

// procStatus is the process's status; nil once it is gone.
func procStatus(pid int) map[string]string { return hostproc.Status(pid) }
