package cloud

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hutch-vm/hutch/test/testproc"
)

// waitTimeout is generous: under TCG, on a shared 2-core machine, a
// Debian boot with cloud-init takes a minute or two, more when other VMs
// boot at the same time.
const waitTimeout = "15m"

const runcmdConfig = `#cloud-config
runcmd:
  - [sh, -c, 'echo made-by-runcmd > /var/tmp/hutch-runcmd']
`

func vmNames(psJSON string) []string {
	var views []struct {
		Name string `json:"name"`
	}
	json.Unmarshal([]byte(psJSON), &views)
	var names []string
	for _, v := range views {
		names = append(names, v.Name)
	}
	return names
}

// TestDebianCloudGuest is the whole story on a real Debian 12 guest: the
// image imported into the cache and booted by name, cloud-init seeded with
// hutch's key and the user's own runcmd, ssh, cp both ways, the host keys
// pinned from the console, and the errors once the VM is stopped.
func TestDebianCloudGuest(t *testing.T) {
	t.Parallel()
	u := newVMUser(t)
	if got := strings.TrimSpace(u.must("image", "import", "--name", "debian12", debian.Disk)); got != "debian12" {
		t.Fatalf("image import printed %q", got)
	}
	if out := u.must("images"); !strings.Contains(out, "debian12") {
		t.Fatalf("hutch images does not list the import:\n%s", out)
	}
	ud := u.writeFile("user-data.yaml", runcmdConfig, 0o600)

	start := time.Now()
	out := u.must("run", "--name", "deb", "--memory", "1G", "--kernel", debian.Kernel, "--initrd", debian.Initrd,
		"--append", guestAppend, "--ssh", "--cloud-init", ud, "--wait", "--wait-timeout", waitTimeout, "debian12")
	t.Logf("hutch run --ssh --wait returned after %s", time.Since(start).Round(time.Second))
	if strings.TrimSpace(out) != "deb" {
		t.Fatalf("run printed %q, want the name", out)
	}

	// The seed was made by the user, not root, in the VM's data dir.
	assertOwner(t, u.path("data/hutch/vms/deb/seed.iso"), u.uid)

	uname := u.must("ssh", "deb", "--", "uname", "-a")
	if !strings.HasPrefix(uname, "Linux deb "+debian.Release+" ") {
		t.Fatalf("uname -a in the guest printed %q, want Linux deb %s ...", uname, debian.Release)
	}
	if who := strings.TrimSpace(u.must("ssh", "deb", "--", "id", "-un")); who != cloudUser {
		t.Errorf("logged in as %q, want %q (the host user's name)", who, cloudUser)
	}
	if root := strings.TrimSpace(u.must("ssh", "deb", "--", "sudo", "-n", "id", "-u")); root != "0" {
		t.Errorf("sudo in the guest gave uid %q", root)
	}

	// The user's own runcmd ran; it runs in cloud-init's last stage, which
	// may end after sshd answers.
	if st := u.run("ssh", "deb", "--", "cloud-init", "status", "--wait"); st.code != 0 {
		t.Fatalf("cloud-init status --wait: %s", st)
	}
	if got := strings.TrimSpace(u.must("ssh", "deb", "--", "cat", "/var/tmp/hutch-runcmd")); got != "made-by-runcmd" {
		t.Errorf("runcmd's file holds %q", got)
	}
	t.Logf("boot to the end of cloud-init: %s", time.Since(start).Round(time.Second))

	// cloud-init printed the host keys on the console: they are pinned.
	u.must("ssh", "deb", "--", "true")
	kh, err := os.ReadFile(u.path("data/hutch/vms/deb/known_hosts"))
	if err != nil {
		t.Fatalf("no known_hosts for the vm: %v", err)
	}
	var view struct {
		SSH *struct {
			User     string `json:"user"`
			HostPort int    `json:"hostPort"`
		} `json:"ssh"`
		Ports []struct {
			HostPort  int `json:"hostPort"`
			GuestPort int `json:"guestPort"`
		} `json:"ports"`
	}
	if err := json.Unmarshal([]byte(u.must("inspect", "deb")), &view); err != nil {
		t.Fatal(err)
	}
	if view.SSH == nil || view.SSH.User != cloudUser || len(view.Ports) != 1 || view.Ports[0].GuestPort != 22 || view.Ports[0].HostPort != view.SSH.HostPort {
		t.Fatalf("inspect: ssh %+v, ports %+v", view.SSH, view.Ports)
	}
	prefix := "[127.0.0.1]:" + strconv.Itoa(view.SSH.HostPort) + " ssh-ed25519 "
	if !strings.Contains(string(kh), prefix) {
		t.Errorf("known_hosts lacks the guest's ed25519 key:\n%s", kh)
	}
	guestKey := strings.TrimSpace(u.must("ssh", "deb", "--", "cat", "/etc/ssh/ssh_host_ed25519_key.pub"))
	if f := strings.Fields(guestKey); len(f) < 2 || !strings.Contains(string(kh), f[0]+" "+f[1]) {
		t.Errorf("known_hosts does not hold the guest's own key %q:\n%s", guestKey, kh)
	}

	// cp both ways.
	up := u.writeFile("up.txt", "from the host\n", 0o644)
	u.must("cp", up, "deb:/tmp/up.txt")
	if got := u.must("ssh", "deb", "--", "cat", "/tmp/up.txt"); got != "from the host\n" {
		t.Errorf("file copied in holds %q", got)
	}
	u.must("cp", "deb:/etc/os-release", "./os-release")
	if b, err := os.ReadFile(u.path("files/os-release")); err != nil || !strings.Contains(string(b), `VERSION_CODENAME=bookworm`) {
		t.Errorf("os-release copied out: %q, %v", b, err)
	}
	assertOwner(t, u.path("files/os-release"), u.uid)
	if r := u.run("ssh", "deb", "--", "exit", "3"); r.code != 3 {
		t.Errorf("ssh did not pass the remote exit status on: %s", r)
	}

	// A stopped VM: clear errors, exit 2.
	u.must("ssh", "deb", "--", "sh", "-c", "'echo kept > kept.txt; sync'")
	u.must("stop", "-t", "60", "deb")
	for _, args := range [][]string{{"ssh", "deb", "--", "true"}, {"cp", up, "deb:/tmp/x"}} {
		r := u.run(args...)
		if r.code != 2 || !strings.Contains(r.stderr, `vm "deb" is stopped: ssh needs a running vm`) || strings.Count(r.stderr, "\n") != 1 {
			t.Errorf("hutch %s on a stopped vm: %s", strings.Join(args, " "), r)
		}
	}

	// The VM is kept: started again, with more memory set while it was
	// stopped, it has the file and takes the same login.
	u.must("set", "deb", "--memory", "1536M")
	u.must("snapshot", "create", "deb", "before")
	u.must("start", "deb")
	u.waitLogin("deb")
	if got := strings.TrimSpace(u.must("ssh", "deb", "--", "cat", "kept.txt")); got != "kept" {
		t.Errorf("after stop and start the file holds %q", got)
	}
	if mem := u.must("ssh", "deb", "--", "grep", "MemTotal", "/proc/meminfo"); !memAtLeast(mem, 1300<<10) {
		t.Errorf("after set --memory 1536M: %q", mem)
	}
	// A snapshot taken before a change brings the old disk back.
	u.must("ssh", "deb", "--", "sh", "-c", "'rm kept.txt; sync'")
	u.must("stop", "-t", "60", "deb")
	u.must("snapshot", "restore", "deb", "before")
	// A VM whose supervisor was killed can be started again.
	u.must("start", "deb")
	var v struct {
		SupervisorPid int `json:"supervisorPid"`
	}
	json.Unmarshal([]byte(u.must("inspect", "deb")), &v)
	syscall.Kill(v.SupervisorPid, syscall.SIGKILL)
	time.Sleep(2 * time.Second)
	u.must("start", "deb")
	u.waitLogin("deb")
	if got := strings.TrimSpace(u.must("ssh", "deb", "--", "cat", "kept.txt")); got != "kept" {
		t.Errorf("after snapshot restore the file holds %q", got)
	}
	u.must("stop", "-t", "60", "deb")
	u.must("rm", "deb")
	if _, err := os.Stat(u.path("data/hutch/images/debian12.qcow2")); err != nil {
		t.Errorf("rm took the cached image with it: %v", err)
	}
}

// memAtLeast reads a /proc/meminfo MemTotal line.
func memAtLeast(line string, kib int) bool {
	f := strings.Fields(line)
	if len(f) < 2 {
		return false
	}
	n, _ := strconv.Atoi(f[1])
	return n >= kib
}

// TestSSHOnly: the plain case, --ssh and nothing else of cloud-init's,
// on an image named by path and a generated VM name, with a host
// directory shared (-v), which cloud-init mounts.
func TestSSHOnly(t *testing.T) {
	t.Parallel()
	u := newVMUser(t)
	share := u.path("files/share")
	if err := os.Mkdir(share, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(share, "in.txt"), []byte("from-the-host\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Chown(share, u.uid, u.gid)
	os.Chown(filepath.Join(share, "in.txt"), u.uid, u.gid)
	start := time.Now()
	name := strings.TrimSpace(u.must("run", "--memory", "1G", "--kernel", debian.Kernel, "--initrd", debian.Initrd,
		"--append", guestAppend, "--ssh", "-v", share+":/mnt/host", "--wait", "--wait-timeout", waitTimeout, debian.Disk))
	t.Logf("hutch run --ssh --wait returned after %s", time.Since(start).Round(time.Second))
	pub, err := os.ReadFile(u.path("data/hutch/ssh/id_ed25519.pub"))
	if err != nil {
		t.Fatalf("no hutch key pair: %v", err)
	}
	assertOwner(t, u.path("data/hutch/ssh/id_ed25519"), u.uid)
	keys := u.must("ssh", name, "--", "cat", ".ssh/authorized_keys")
	if !strings.Contains(keys, strings.TrimSpace(string(pub))) {
		t.Errorf("authorized_keys in the guest %q lacks hutch's key %q", keys, pub)
	}
	if h := strings.TrimSpace(u.must("ssh", name, "--", "hostname")); h != name {
		t.Errorf("guest hostname %q, want the vm's name %q", h, name)
	}
	if ip := u.must("ssh", name, "--", "ip", "-4", "-o", "addr", "show", "eth0"); !strings.Contains(ip, "dynamic") {
		t.Errorf("eth0 has no address from DHCP: %q", ip)
	}
	// The share: the guest reads the host's file, and its root writes as
	// the user (the guest's other users as the user's subordinate ids).
	if got := u.must("ssh", name, "--", "cat", "/mnt/host/in.txt"); got != "from-the-host\n" {
		t.Errorf("the guest reads %q from the share", got)
	}
	u.must("ssh", name, "--", "sudo", "-n", "sh", "-c", "'echo from-the-guest > /mnt/host/out.txt'")
	if b, err := os.ReadFile(filepath.Join(share, "out.txt")); err != nil || string(b) != "from-the-guest\n" {
		t.Errorf("the guest's write did not reach the host: %q, %v", b, err)
	} else {
		assertOwner(t, filepath.Join(share, "out.txt"), u.uid)
	}
	u.must("rm", "-f", name)
}

// TestBadInput: what the user gets wrong fails at once, exit 2, one line
// naming the problem and the fix, and leaves no VM behind.
func TestBadInput(t *testing.T) {
	u := newVMUser(t)
	good := u.writeFile("good.yaml", runcmdConfig, 0o600)
	invalid := u.writeFile("invalid.yaml", "#cloud-config\nruncmd: [\n", 0o600)
	script := u.writeFile("script.sh", "#!/bin/sh\necho hi\n", 0o600)
	secret := filepath.Join(u.dir, "secret.yaml") // root's, 0600
	if err := os.WriteFile(secret, []byte(runcmdConfig), 0o600); err != nil {
		t.Fatal(err)
	}
	boot := []string{"run", "-d", "--kernel", debian.Kernel, "--initrd", debian.Initrd, "--append", guestAppend}
	with := func(a ...string) []string { return append(append([]string{}, boot...), a...) }
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"unreadable user-data", with("--ssh", "--cloud-init", secret, debian.Disk), "--cloud-init " + secret + ": this user cannot read it"},
		{"missing user-data", with("--cloud-init", "/nonexistent.yaml", debian.Disk), "--cloud-init /nonexistent.yaml does not exist"},
		{"invalid yaml", with("--ssh", "--cloud-init", invalid, debian.Disk), "--cloud-init " + invalid + ": user-data is not valid YAML"},
		{"not cloud-config", with("--cloud-init", script, debian.Disk), "user-data must start with a line reading #cloud-config"},
		{"ssh without an image", with("--ssh"), "--ssh and --cloud-init configure a cloud image"},
		{"ssh without a network", with("--ssh", "--network", "none", debian.Disk), "--ssh forwards a host port to the guest's port 22: drop --network none"},
		{"wait without ssh", with("--wait", "--cloud-init", good, debian.Disk), "--wait waits for ssh: add --ssh"},
		{"cp without a vm", []string{"cp", "a", "b"}, "neither path is in a vm"},
		{"cp between vms", []string{"cp", "a:/x", "b:/y"}, "both paths are in a vm"},
		{"cp with no guest path", []string{"cp", "a:", "b"}, `"a:" names no path in vm a`},
		{"import of nothing", []string{"image", "import", "/nonexistent.qcow2"}, "image file /nonexistent.qcow2 does not exist"},
		{"import under a bad name", []string{"image", "import", "--name", "../x", debian.Disk}, `invalid image name "../x"`},
		{"rm of no image", []string{"image", "rm", "ghost"}, "no such image: ghost"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := u.run(tc.args...)
			if r.code != 2 || !strings.Contains(r.stderr, tc.want) || strings.Count(r.stderr, "\n") != 1 {
				t.Errorf("got %s, want exit 2 and one line with %q", r, tc.want)
			}
		})
	}
	// A VM that does not exist is exit 1 for every verb, ssh's as well.
	for _, verb := range [][]string{{"ssh", "ghost"}, {"ssh-config", "ghost"}, {"cp", "ghost:/x", "y"}, {"inspect", "ghost"}} {
		if r := u.run(verb...); r.code != 1 || !strings.Contains(r.stderr, "no such vm: ghost") {
			t.Errorf("%v: got %s, want exit 1 naming the vm", verb, r)
		}
	}
	if names := vmNames(u.must("ps", "-a", "--format", "json")); len(names) != 0 {
		t.Errorf("bad input left vms behind: %v", names)
	}
	if imgs := strings.TrimSpace(u.must("images", "--format", "json")); imgs != "[]" {
		t.Errorf("bad input left images behind: %s", imgs)
	}

	// ssh to a VM started without --ssh: it need not have booted.
	u.must(with("--name", "plain", "--network", "none", debian.Disk)...)
	r := u.run("ssh", "plain", "--", "true")
	if r.code != 2 || !strings.Contains(r.stderr, `vm "plain" was started without --ssh: run a new one with hutch run --ssh IMAGE`) {
		t.Errorf("ssh to a vm without --ssh: %s", r)
	}
	u.must("rm", "-f", "plain")

	// --wait that runs out: exit 1, pointing at the console log; the VM
	// is left running to be looked at.
	r = u.run(with("--name", "slow", "--ssh", "--wait", "--wait-timeout", "2s", debian.Disk)...)
	if r.code != 1 || !strings.Contains(r.stderr, `vm "slow": no ssh login within 2s`) || !strings.Contains(r.stderr, "hutch logs slow") {
		t.Errorf("--wait timing out: %s", r)
	}
	u.must("rm", "-f", "slow")
}

// TestImportRaw: a raw image is converted into the cache as qcow2, and
// the name defaults to the file's.
func TestImportRaw(t *testing.T) {
	u := newVMUser(t)
	raw := u.writeFile("blank.img", "", 0o644)
	if err := os.Truncate(raw, 16<<20); err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(u.must("image", "import", raw)); got != "blank" {
		t.Fatalf("import named the image %q, want blank", got)
	}
	cached := u.path("data/hutch/images/blank.qcow2")
	info, err := testproc.Command("qemu-img", "info", "--output=json", cached).Output()
	if err != nil || !strings.Contains(string(info), `"format": "qcow2"`) {
		t.Fatalf("cached image is not qcow2: %s %v", info, err)
	}
	assertOwner(t, cached, u.uid)
	if r := u.run("image", "import", raw); r.code != 2 || !strings.Contains(r.stderr, `an image named "blank" already exists`) {
		t.Errorf("second import: %s", r)
	}
	u.must("image", "rm", "blank")
	if imgs := strings.TrimSpace(u.must("images", "--format", "json")); imgs != "[]" {
		t.Errorf("image rm left %s", imgs)
	}
}

func assertOwner(t *testing.T, path string, uid int) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := int(fi.Sys().(*syscall.Stat_t).Uid); got != uid {
		t.Errorf("%s is owned by uid %d, want %d (made without root)", path, got, uid)
	}
}
