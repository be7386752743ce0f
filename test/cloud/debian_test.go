package cloud

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/hutch-vm/hutch/test/testproc"
)

// debianGuest is a Debian 12 cloud guest built from Debian packages: a
// root filesystem image with systemd, cloud-init and sshd, and the
// kernel and initrd installed in it, booted directly (root=/dev/vda).
type debianGuest struct {
	Disk    string // qcow2 holding an ext4 root filesystem
	Kernel  string
	Initrd  string
	Release string // the kernel release, as uname -r prints it
}

// Append is the kernel command line the guest boots with.
const guestAppend = "root=/dev/vda rw console=ttyS0"

// What the guest is made of. Any change here changes the cache key.
var (
	debSuite  = "bookworm"
	debMirror = "http://deb.debian.org/debian"
	// minbase plus what a cloud guest needs. debootstrap resolves plain
	// dependencies only, not virtual packages: python3-cffi-backend
	// provides what python3-cryptography (for cloud-init) asks for.
	debInclude = []string{
		"systemd-sysv", "udev", "cloud-init", "python3-cffi-backend", "openssh-server",
		"linux-image-cloud-amd64", "initramfs-tools", "iproute2", "sudo",
	}
	// cloudCfg: NoCloud only (no probing for other clouds), networkd
	// (the only renderer installed: no ifupdown, no netplan), and two
	// steps skipped that cost most of a TCG boot: generating locales and
	// RSA/DSA host keys.
	cloudCfg = `datasource_list: [NoCloud, None]
system_info:
  network:
    renderers: [networkd]
locale: C.UTF-8
ssh_genkeytypes: [ed25519, ecdsa]
`
	// Units a throwaway test guest does not need at boot.
	disabledUnits = []string{
		"apt-daily.timer", "apt-daily-upgrade.timer", "dpkg-db-backup.timer", "e2scrub_all.timer",
		"e2scrub_reap.service", "fstrim.timer", "systemd-pstore.service",
	}
	diskSize = "2G"
)

// guestKey names the cache entry for these inputs.
func guestKey() string {
	h := sha256.New()
	fmt.Fprintf(h, "v1\n%s\n%s\n%s\n%s\n%s\n%s\n%s\n", debSuite, debMirror, strings.Join(debInclude, ","),
		cloudCfg, strings.Join(disabledUnits, ","), diskSize, guestAppend)
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// buildDebian returns the guest from cache, building it first if needed.
// The build runs as root (debootstrap needs it) but makes no loop devices
// and mounts nothing: mke2fs -d fills the filesystem image from the tree.
// Files are left world-readable: the tests boot them as other users.
func buildDebian(cache string) (debianGuest, error) {
	dir := filepath.Join(cache, "debian12-cloud-"+guestKey())
	g := debianGuest{Disk: filepath.Join(dir, "disk.qcow2"), Kernel: filepath.Join(dir, "vmlinuz"), Initrd: filepath.Join(dir, "initrd.img")}
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return g, err
	}
	lock, err := os.OpenFile(filepath.Join(cache, ".lock-debian12-cloud"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return g, err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return g, err
	}
	release, err := os.ReadFile(filepath.Join(dir, "release"))
	if err == nil {
		g.Release = strings.TrimSpace(string(release))
		return g, nil
	}
	for _, tool := range []string{"debootstrap", "mke2fs", "qemu-img", "chroot"} {
		if _, err := exec.LookPath(tool); err != nil {
			return g, fmt.Errorf("%s is missing: install it (make deps installs the packages the tests need)", tool)
		}
	}
	start := time.Now()
	work, err := os.MkdirTemp(cache, ".build-debian12-cloud-")
	if err != nil {
		return g, err
	}
	defer os.RemoveAll(work)
	root := filepath.Join(work, "root")
	logf, err := os.Create(filepath.Join(work, "build.log"))
	if err != nil {
		return g, err
	}
	defer logf.Close()
	run := func(name string, args ...string) error {
		cmd := testproc.Command(name, args...)
		cmd.Stdout, cmd.Stderr = logf, logf
		cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND=noninteractive", "LC_ALL=C"}
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("%s %s: %v (log: %s)", name, strings.Join(args, " "), err, tail(logf.Name()))
		}
		return nil
	}
	if err := run("debootstrap", "--variant=minbase", "--include="+strings.Join(debInclude, ","), debSuite, root, debMirror); err != nil {
		return g, err
	}
	writes := map[string]string{
		"etc/cloud/cloud.cfg.d/90_hutch_test.cfg": cloudCfg,
		"etc/fstab":      "/dev/vda / ext4 defaults 0 0\n",
		"etc/machine-id": "", // made at first boot, one per VM
	}
	for name, data := range writes {
		if err := os.WriteFile(filepath.Join(root, name), []byte(data), 0o644); err != nil {
			return g, err
		}
	}
	if err := run("chroot", root, "systemctl", "enable", "systemd-networkd"); err != nil {
		return g, err
	}
	if err := run("chroot", append([]string{root, "systemctl", "disable"}, disabledUnits...)...); err != nil {
		return g, err
	}
	// Host keys made now would be every VM's; cloud-init makes each its own.
	keys, _ := filepath.Glob(filepath.Join(root, "etc/ssh/ssh_host_*"))
	debs, _ := filepath.Glob(filepath.Join(root, "var/cache/apt/archives/*.deb"))
	lists, _ := filepath.Glob(filepath.Join(root, "var/lib/apt/lists/*_Packages"))
	for _, f := range append(append(keys, debs...), lists...) {
		os.Remove(f)
	}
	kernels, _ := filepath.Glob(filepath.Join(root, "boot/vmlinuz-*"))
	if len(kernels) != 1 {
		return g, fmt.Errorf("debootstrap installed %d kernels, want 1", len(kernels))
	}
	rel := strings.TrimPrefix(filepath.Base(kernels[0]), "vmlinuz-")
	out := filepath.Join(work, "out")
	if err := os.Mkdir(out, 0o755); err != nil {
		return g, err
	}
	for src, dst := range map[string]string{kernels[0]: "vmlinuz", filepath.Join(root, "boot", "initrd.img-"+rel): "initrd.img"} {
		if err := run("cp", src, filepath.Join(out, dst)); err != nil {
			return g, err
		}
	}
	raw := filepath.Join(work, "disk.raw")
	if err := run("mke2fs", "-q", "-t", "ext4", "-L", "root", "-d", root, raw, diskSize); err != nil {
		return g, err
	}
	if err := run("qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, filepath.Join(out, "disk.qcow2")); err != nil {
		return g, err
	}
	if err := os.WriteFile(filepath.Join(out, "release"), []byte(rel+"\n"), 0o644); err != nil {
		return g, err
	}
	for _, f := range []string{"vmlinuz", "initrd.img", "disk.qcow2"} {
		if err := os.Chmod(filepath.Join(out, f), 0o644); err != nil {
			return g, err
		}
	}
	os.RemoveAll(dir) // a build cut short before its release file
	if err := os.Rename(out, dir); err != nil {
		return g, err
	}
	fmt.Fprintf(os.Stderr, "cloud: built the Debian 12 guest (kernel %s) in %s\n", rel, time.Since(start).Round(time.Second))
	g.Release = rel
	return g, nil
}

// tail is the end of a build log, for an error message.
func tail(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return strings.TrimSpace(string(b))
}
