package e2e

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hutch-vm/hutch/test/testproc"
)

const (
	bridgeHelper = "/usr/lib/qemu/qemu-bridge-helper"
	bridgeACL    = "/etc/qemu/bridge.conf"
)

// A VM on a host-only bridge through qemu-bridge-helper: the bridge lives
// in a network namespace the test makes, with a DHCP server on it; the
// helper's ACL allows it; the host reaches the guest at its own address.
// The helper's setuid bit and the ACL file are the machine's: the test sets
// them for its run and puts them back.
func TestBridgeNetwork(t *testing.T) {
	u := newUser(t, "hutchtest1")
	ns := netns(t)
	dir := openDir(t)
	sh(t, "ip", "-n", ns, "link", "add", "hbr0", "type", "bridge")
	sh(t, "ip", "-n", ns, "addr", "add", "10.77.0.1/24", "dev", "hbr0")
	sh(t, "ip", "-n", ns, "link", "set", "hbr0", "up")
	sh(t, "ip", "-n", ns, "link", "add", "hbr1", "type", "bridge")
	conf := filepath.Join(dir, "udhcpd.conf")
	os.WriteFile(filepath.Join(dir, "leases"), nil, 0o644)
	os.WriteFile(conf, []byte(fmt.Sprintf("start 10.77.0.10\nend 10.77.0.20\ninterface hbr0\nlease_file %s/leases\noption subnet 255.255.255.0\noption router 10.77.0.1\n", dir)), 0o644)
	dhcpd := testproc.Command("ip", "netns", "exec", ns, "busybox", "udhcpd", "-f", conf)
	if err := dhcpd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dhcpd.Process.Kill(); dhcpd.Wait() })

	restoreACL := replaceFile(t, bridgeACL, "allow hbr0\n")
	defer restoreACL()
	fi, err := os.Stat(bridgeHelper)
	if err != nil {
		t.Fatalf("%s: %v (install qemu-system-common)", bridgeHelper, err)
	}
	defer os.Chmod(bridgeHelper, fi.Mode())

	inNS := func(args ...string) result {
		c := testproc.Command("ip", append([]string{"netns", "exec", ns, "setpriv", "--reuid", strconv.Itoa(u.uid),
			"--regid", strconv.Itoa(u.gid), "--clear-groups", "--", hutchBin}, args...)...)
		c.Env = u.env
		return u.runCmd(c)
	}
	bridged := func(name, bridge string) []string {
		return []string{"run", "-d", "--name", name, "--memory", "256M", "--kernel", guest.Kernel, "--initrd", guest.Initrd,
			"--append", "console=ttyS0", "--network", "bridge=" + bridge}
	}

	// Without the setuid bit the helper cannot make a tap: said before anything starts.
	os.Chmod(bridgeHelper, 0o755)
	u.ok("ps") // creates the state dirs, so the snapshot sees only what runs add
	before := u.tree()
	if r := inNS(bridged("br", "hbr0")...); r.code == 0 || !strings.Contains(r.err, "not setuid root") || !strings.Contains(r.err, "chmod u+s") {
		t.Errorf("bridge without a setuid helper: %v", r)
	}
	os.Chmod(bridgeHelper, 0o755|os.ModeSetuid)
	// A bridge the ACL does not allow.
	if r := inNS(bridged("br", "hbr1")...); r.code == 0 || !strings.Contains(r.err, `"allow hbr1"`) {
		t.Errorf("bridge denied by the ACL: %v", r)
	}
	if after := u.tree(); after != before {
		t.Errorf("refused bridge runs left state behind:\n%s", after)
	}

	if r := inNS(bridged("br", "hbr0")...); r.code != 0 {
		t.Fatalf("bridged run: %v", r)
	}
	if v := u.inspect("br"); v.Network != "bridge" {
		t.Errorf("inspect network = %q", v.Network)
	}
	addrRE := regexp.MustCompile(`eth0 (10\.77\.0\.\d+)/24`)
	var ip string
	if !waitFor(bootTimeout, func() bool {
		m := addrRE.FindStringSubmatch(u.run("logs", "br").out)
		if m != nil {
			ip = m[1]
		}
		return m != nil
	}) {
		t.Fatalf("the bridged guest got no address by DHCP:\n%s", tail(u.run("logs", "br").out, 1500))
	}
	reach(t, ns, ip)

	// Root (system mode) needs no helper: it makes the tap itself and
	// passes it to a VMM that has no CAP_NET_ADMIN.
	rootName := "sysbr-" + ns
	t.Cleanup(func() { testproc.Command(hutchBin, "rm", "-f", rootName).Run() })
	c := testproc.Command("ip", "netns", "exec", ns, hutchBin, "run", "-d", "--name", rootName, "--memory", "256M",
		"--kernel", guest.Kernel, "--initrd", guest.Initrd, "--append", "console=ttyS0", "--network", "bridge=hbr0")
	if out, err := c.CombinedOutput(); err != nil {
		t.Fatalf("bridged run as root: %v: %s", err, out)
	}
	var rootIP string
	if !waitFor(bootTimeout, func() bool {
		out, _ := testproc.Command(hutchBin, "logs", rootName).Output()
		m := addrRE.FindStringSubmatch(string(out))
		if m != nil {
			rootIP = m[1]
		}
		return m != nil && rootIP != ip
	}) {
		t.Fatal("the root-started bridged guest got no address of its own by DHCP")
	}
	reach(t, ns, rootIP)
}

// reach fetches the guest's page at ip from inside the test's namespace.
func reach(t *testing.T, ns, ip string) {
	t.Helper()
	var out []byte
	var err error
	if !waitFor(60*time.Second, func() bool {
		out, err = testproc.Command("ip", "netns", "exec", ns, "curl", "-s", "-m", "3", "http://"+ip+"/").Output()
		return err == nil && strings.Contains(string(out), "hutch test guest")
	}) {
		t.Fatalf("host could not reach the guest at %s on the bridge: %v %q", ip, err, out)
	}
}

// netns makes a network namespace that the test removes.
func netns(t *testing.T) string {
	t.Helper()
	b := make([]byte, 3)
	rand.Read(b)
	ns := "hutchtest-" + hex.EncodeToString(b)
	sh(t, "ip", "netns", "add", ns)
	t.Cleanup(func() { testproc.Command("ip", "netns", "del", ns).Run() })
	sh(t, "ip", "-n", ns, "link", "set", "lo", "up")
	return ns
}

func sh(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := testproc.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
}

// replaceFile writes content to path and returns what puts the old file back.
func replaceFile(t *testing.T, path, content string) func() {
	t.Helper()
	old, err := os.ReadFile(path)
	existed := err == nil
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Dir(path), 0o755)
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return func() {
		if existed {
			os.WriteFile(path, old, 0o644)
		} else {
			os.Remove(path)
		}
	}
}
