// Package testguest builds the small guest that end-to-end tests boot: the
// host's Debian cloud kernel with a busybox initramfs that loads the virtio
// modules, takes an address by DHCP, serves HTTP on port 80 and a TCP and
// UDP echo on port 7, prints Marker on the serial console and then runs a shell
// there. The same kernel and initramfs are also packed into a bootable
// qcow2 disk image (FAT + syslinux) for tests that boot from a disk.
//
// Everything comes from packages installed on the host; nothing is
// downloaded. Build caches its output, so every test package can call it.
package testguest

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	"github.com/hutch-vm/hutch/internal/guest"
	"github.com/hutch-vm/hutch/test/testproc"
)

const (
	// Marker is printed on its own line on the serial console once the
	// guest is fully up (network configured and services started).
	Marker = "HUTCH-GUEST-READY"
	// Prompt is the shell prompt on the serial console.
	Prompt = "guest# "
	// PageText is served by the guest at http://<guest>/.
	PageText = "hutch test guest"
	// HTTPPort and EchoPort are the guest's TCP services.
	HTTPPort = 80
	EchoPort = 7
	// PoweroffArg on the kernel command line makes the guest power itself
	// off right after printing Marker.
	PoweroffArg = "hutch.poweroff=1"
	// DiskAppend is the kernel command line the disk image boots with.
	DiskAppend = "console=ttyS0 quiet"

	// builderVersion is part of the cache key: bump it whenever this file
	// changes what it produces in a way the other inputs do not capture.
	builderVersion = "2"

	busyboxPath = "/bin/busybox"
	diskSizeKiB = 65536
)

// Modules are loaded by the guest in dependency order. Both virtio
// transports are included: microvm exposes virtio-mmio devices (found
// through ACPI), q35 and pc expose virtio-pci.
var Modules = []string{"virtio_pci", "virtio_mmio", "virtio_net", "virtio_blk"}

// applets are the busybox applets the guest's scripts rely on.
var applets = []string{
	"awk", "cat", "cttyhack", "dmesg", "echo", "grep", "hostname", "httpd", "insmod",
	"ip", "mkdir", "mount", "nc", "poweroff", "setsid", "sh", "sleep", "stty", "udhcpc", "uname",
}

// Guest is a built test guest. All paths are absolute and world-readable.
type Guest struct {
	Kernel    string // the host kernel, copied
	Initrd    string // gzip-compressed initramfs
	DiskImage string // qcow2 image booting Kernel and Initrd with syslinux; use it through an overlay or -snapshot
	Marker    string // the line printed once the guest is up
}

// Build builds the guest into cacheDir, or reuses what an earlier call left
// there when none of the inputs changed. Concurrent calls, from this or
// other processes, are safe: they serialise on a lock file in cacheDir and
// every artefact is replaced by rename, so a reader never sees a partial
// file.
//
// cacheDir and the artefacts are made world-readable because tests run
// the VMM as unprivileged users; cacheDir's parents must be searchable by
// those users too.
func Build(cacheDir string) (Guest, error) {
	dir, err := filepath.Abs(cacheDir)
	if err != nil {
		return Guest{}, fmt.Errorf("test guest: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return Guest{}, fmt.Errorf("test guest: create cache dir: %w", err)
	}
	if err := makeMode(dir, 0o755); err != nil {
		return Guest{}, fmt.Errorf("test guest: %w", err)
	}
	unlock, err := lockDir(dir)
	if err != nil {
		return Guest{}, fmt.Errorf("test guest: %w", err)
	}
	defer unlock()

	g := Guest{
		Kernel:    filepath.Join(dir, "vmlinuz"),
		Initrd:    filepath.Join(dir, "initrd.gz"),
		DiskImage: filepath.Join(dir, "disk.qcow2"),
		Marker:    Marker,
	}
	in, err := gatherInputs()
	if err != nil {
		return Guest{}, fmt.Errorf("test guest: %w", err)
	}
	stamp := filepath.Join(dir, "stamp")
	if fresh(stamp, in.key, g.Kernel, g.Initrd, g.DiskImage) {
		return g, nil
	}
	// Invalidate first, so a build that dies halfway is redone next time.
	if err := os.Remove(stamp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return Guest{}, fmt.Errorf("test guest: %w", err)
	}
	removeLeftovers(dir)
	if err := build(dir, in, g); err != nil {
		return Guest{}, fmt.Errorf("test guest: %w", err)
	}
	if err := writeFileAtomic(stamp, func(w io.Writer) error {
		_, err := io.WriteString(w, in.key+"\n")
		return err
	}); err != nil {
		return Guest{}, fmt.Errorf("test guest: %w", err)
	}
	return g, nil
}

type inputs struct {
	kernel, modDir string
	files          map[string][]byte
	key            string
}

func gatherInputs() (inputs, error) {
	kernel, release, err := guest.FindHostKernel("/boot", "/lib/modules")
	if err != nil {
		return inputs{}, fmt.Errorf("%w (apt-get install linux-image-cloud-amd64)", err)
	}
	in := inputs{kernel: kernel, modDir: filepath.Join("/lib/modules", release), files: guestFiles()}

	h := sha256.New()
	fmt.Fprintf(h, "builder %s\ndisk %d\n%s\n", builderVersion, diskSizeKiB, syslinuxCfg)
	for _, p := range []string{kernel, filepath.Join(in.modDir, "modules.dep"), busyboxPath} {
		st, err := os.Stat(p)
		if err != nil {
			if p == busyboxPath {
				return inputs{}, fmt.Errorf("%w (apt-get install busybox-static)", err)
			}
			return inputs{}, err
		}
		fmt.Fprintf(h, "file %s %d %d\n", p, st.Size(), st.ModTime().UnixNano())
	}
	fmt.Fprintf(h, "modules %q\n", Modules)
	h.Write(udpechoSource)
	names := make([]string, 0, len(in.files))
	for n := range in.files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(h, "content %s %d\n", n, len(in.files[n]))
		h.Write(in.files[n])
	}
	in.key = hex.EncodeToString(h.Sum(nil))
	return in, nil
}

func fresh(stamp, key string, artefacts ...string) bool {
	data, err := os.ReadFile(stamp)
	if err != nil || strings.TrimSpace(string(data)) != key {
		return false
	}
	for _, a := range artefacts {
		if _, err := os.Stat(a); err != nil {
			return false
		}
	}
	return true
}

func build(dir string, in inputs, g Guest) error {
	// Check every tool before the slow steps, so a missing package is
	// reported at once.
	tools := map[string]string{}
	for _, t := range []struct{ names, pkg string }{
		{"mkfs.fat mkfs.vfat", "dosfstools"},
		{"mcopy", "mtools"},
		{"syslinux", "syslinux"},
		{"qemu-img", "qemu-utils"},
	} {
		p, err := findTool(strings.Fields(t.names)...)
		if err != nil {
			return fmt.Errorf("%w (apt-get install %s)", err, t.pkg)
		}
		tools[strings.Fields(t.names)[0]] = p
	}
	have, err := guest.BusyboxApplets(busyboxPath)
	if err != nil {
		return err
	}
	for _, a := range applets {
		if i := sort.SearchStrings(have, a); i == len(have) || have[i] != a {
			return fmt.Errorf("%s lacks the %s applet", busyboxPath, a)
		}
	}

	if err := copyFile(in.kernel, g.Kernel); err != nil {
		return err
	}
	udpecho, err := buildUDPEcho()
	if err != nil {
		return err
	}
	initrd := guest.Initramfs{
		Busybox: busyboxPath,
		ModDir:  in.modDir,
		Modules: Modules,
		Init:    in.files["init"],
		Files:   map[string][]byte{"bin/udpecho": udpecho},
	}
	for n, c := range in.files {
		if n != "init" {
			initrd.Files[n] = c
		}
	}
	if err := writeFileAtomic(g.Initrd, initrd.Write); err != nil {
		return err
	}
	return buildDisk(dir, tools, g)
}

// buildDisk makes a partitionless FAT image with syslinux in its boot
// sector. mtools and the mtools flavour of the syslinux installer work on
// the image file directly, so no loop device or mount (and no root) is
// needed. SeaBIOS boots such a "superfloppy" image from a hard disk.
func buildDisk(dir string, tools map[string]string, g Guest) (err error) {
	work, err := os.MkdirTemp(dir, ".disk-")
	if err != nil {
		return fmt.Errorf("disk image: %w", err)
	}
	defer os.RemoveAll(work)

	raw := filepath.Join(work, "disk.raw")
	cfg := filepath.Join(work, "syslinux.cfg")
	if err := os.WriteFile(cfg, []byte(syslinuxCfg), 0o644); err != nil {
		return fmt.Errorf("disk image: %w", err)
	}
	qcow := filepath.Join(work, "disk.qcow2")
	steps := [][]string{
		{tools["mkfs.fat"], "--invariant", "-n", "HUTCHGUEST", "-C", raw, fmt.Sprint(diskSizeKiB)},
		{tools["syslinux"], "--install", raw},
		{tools["mcopy"], "-i", raw, g.Kernel, g.Initrd, cfg, "::/"},
		{tools["qemu-img"], "convert", "-q", "-f", "raw", "-O", "qcow2", raw, qcow},
	}
	for _, s := range steps {
		cmd := testproc.Command(s[0], s[1:]...)
		// mtools rejects images whose size is not a whole number of
		// tracks of its assumed geometry unless told not to check.
		cmd.Env = append(os.Environ(), "MTOOLS_SKIP_CHECK=1")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("disk image: %s: %w: %s", strings.Join(s, " "), err, strings.TrimSpace(string(out)))
		}
	}
	if err := os.Chmod(qcow, 0o644); err != nil {
		return fmt.Errorf("disk image: %w", err)
	}
	if err := os.Rename(qcow, g.DiskImage); err != nil {
		return fmt.Errorf("disk image: %w", err)
	}
	return nil
}

// syslinuxCfg boots without a menu or delay; SERIAL makes syslinux itself
// talk on ttyS0 so a failing boot shows why.
const syslinuxCfg = `SERIAL 0 115200
PROMPT 0
TIMEOUT 0
DEFAULT linux
LABEL linux
  KERNEL vmlinuz
  INITRD initrd.gz
  APPEND ` + DiskAppend + `
`

// findTool looks in PATH and then in the sbin directories, which are not
// in an ordinary user's PATH on Debian but hold mkfs.fat.
func findTool(names ...string) (string, error) {
	for _, n := range names {
		if p, err := exec.LookPath(n); err == nil {
			return p, nil
		}
		for _, d := range []string{"/usr/sbin", "/sbin"} {
			p := filepath.Join(d, n)
			if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
				return p, nil
			}
		}
	}
	return "", fmt.Errorf("%s not found", strings.Join(names, " or "))
}

func copyFile(src, dst string) error {
	f, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("copy %s: %w", src, err)
	}
	defer f.Close()
	return writeFileAtomic(dst, func(w io.Writer) error {
		_, err := io.Copy(w, f)
		return err
	})
}

// writeFileAtomic writes dst through a temporary file in the same
// directory and renames it into place with mode 0644.
func writeFileAtomic(dst string, write func(io.Writer) error) error {
	f, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".tmp-")
	if err != nil {
		return fmt.Errorf("write %s: %w", dst, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after the rename
	if err := write(f); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", dst, err)
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", dst, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", dst, err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		return fmt.Errorf("write %s: %w", dst, err)
	}
	return nil
}

// lockDir takes an exclusive flock on dir/.lock. A read-only descriptor is
// enough for flock, which lets another user share a cache dir they can
// read but not write.
func lockDir(dir string) (unlock func(), err error) {
	f, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_RDONLY|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lock cache dir: %w", err)
	}
	for {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX)
		if err != syscall.EINTR {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("lock cache dir: %w", err)
	}
	return func() { f.Close() }, nil
}

// removeLeftovers deletes temporary files and directories that a build
// killed halfway left behind. It runs under the lock, so none is in use.
func removeLeftovers(dir string) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		n := e.Name()
		if strings.HasPrefix(n, ".disk-") || (strings.HasPrefix(n, ".") && strings.Contains(n, ".tmp-")) {
			os.RemoveAll(filepath.Join(dir, n))
		}
	}
}

func makeMode(dir string, mode os.FileMode) error {
	st, err := os.Stat(dir)
	if err != nil {
		return err
	}
	if st.Mode().Perm() == mode {
		return nil
	}
	return os.Chmod(dir, mode)
}
