package guest

import (
	"bytes"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// UdhcpcScript applies a DHCP lease with ip(8): busybox's default script
// lives at a path an initramfs does not have and relies on ifconfig.
const UdhcpcScript = `#!/bin/sh
case "$1" in
deconfig)
	ip -4 addr flush dev "$interface"
	;;
bound|renew)
	ip -4 addr flush dev "$interface"
	ip addr add "$ip/${mask:-24}" dev "$interface"
	for r in $router; do
		ip route replace default via "$r" dev "$interface"
		break
	done
	: >/etc/resolv.conf
	if [ -n "$domain" ]; then echo "search $domain" >>/etc/resolv.conf; fi
	for s in $dns; do echo "nameserver $s" >>/etc/resolv.conf; done
	;;
esac
exit 0
`

// microInit is /init of the micro VM: enough of a system for a shell with
// a network, and the VM powers off when the shell ends, as a container
// ends with its process.
const microInit = `#!/bin/sh
export PATH=/bin:/sbin:/usr/bin:/usr/sbin HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts && mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
while read -r m; do insmod "$m" 2>/dev/null; done </etc/modules.order
for kv in $(cat /proc/cmdline); do
	case "$kv" in hutch.fs=*) shares="${kv#hutch.fs=}" ;; esac
done
if [ -n "$shares" ]; then
	mkdir -p /run/hutch/fs && mount -t virtiofs hutch /run/hutch/fs
	for s in $(echo "$shares" | tr , ' '); do
		rest="${s#*:}"
		t="${rest%%:*}"
		mkdir -p "$t" && mount --bind "/run/hutch/fs/${s%%:*}" "$t"
		case "$rest" in *:ro) mount -o remount,bind,ro "$t" ;; esac
	done
fi
hostname hutch
ip link set lo up
if ip link show eth0 >/dev/null 2>&1; then
	ip link set eth0 up
	udhcpc -i eth0 -s /etc/udhcpc.sh -q -n -t 5 >/dev/null 2>&1
fi
echo "hutch micro vm: kernel $(uname -r), $(ip -4 -o addr show eth0 2>/dev/null | awk '{print $4}')"
echo "exit the shell to power off"
setsid cttyhack sh -l
poweroff -f
`

// MicroModules are the modules the micro VM loads: the virtio transports
// and the disk, network and shared-file drivers.
var MicroModules = []string{"virtio_pci", "virtio_mmio", "virtio_net", "virtio_blk", "virtio_console", "virtiofs"}

// microVersion changes whenever the micro VM's content changes, so cached
// initramfs files from older builds are not reused.
const microVersion = "2"

// Micro is a VM that boots with nothing downloaded: the host's kernel and
// an initramfs built from the host's busybox and the kernel's modules.
type Micro struct {
	Kernel, Initrd, Release string
}

// BuildMicro finds the host kernel and returns it with a matching
// initramfs, built into cacheDir once per kernel and init. The init is the
// host's static busybox with a shell script; without one it is self (the
// hutch binary) when that is static, running RunInit.
func BuildMicro(cacheDir, bootDir, modulesRoot, self string) (Micro, error) {
	kernel, release, err := FindHostKernel(bootDir, modulesRoot)
	if err != nil {
		return Micro{}, err
	}
	init, busybox := []byte(microInit), ""
	busybox, err = hostBusybox(busyboxPaths)
	if err != nil {
		if !isStatic(self) {
			return Micro{}, fmt.Errorf("%w; or build hutch statically (CGO_ENABLED=0) to use its own init", err)
		}
		if init, err = os.ReadFile(self); err != nil {
			return Micro{}, fmt.Errorf("read %s for the micro vm's init: %w", self, err)
		}
	}
	modDir := filepath.Join(modulesRoot, release)
	key, err := microKey(release, busybox, init)
	if err != nil {
		return Micro{}, err
	}
	m := Micro{Kernel: kernel, Release: release, Initrd: filepath.Join(cacheDir, "micro-"+key+".initrd.gz")}
	if _, err := os.Stat(m.Initrd); err == nil {
		return m, nil
	}
	if err := os.MkdirAll(cacheDir, 0o700); err != nil {
		return Micro{}, fmt.Errorf("create guest cache: %w", err)
	}
	var mods []string
	for _, name := range MicroModules {
		// A module a kernel has built in, or lacks, is not an error for a
		// best-effort micro VM: the guest loads what there is.
		if _, err := ResolveModules(modDir, []string{name}); err == nil {
			mods = append(mods, name)
		}
	}
	var buf bytes.Buffer
	ird := Initramfs{Busybox: busybox, ModDir: modDir, Modules: mods, Init: init,
		Files: map[string][]byte{"etc/udhcpc.sh": []byte(UdhcpcScript), "etc/passwd": []byte("root:x:0:0:root:/root:/bin/sh\n"),
			"etc/group": []byte("root:x:0:\n")}}
	if err := ird.Write(&buf); err != nil {
		return Micro{}, fmt.Errorf("build micro vm initramfs: %w", err)
	}
	tmp, err := os.CreateTemp(cacheDir, ".initrd-")
	if err != nil {
		return Micro{}, fmt.Errorf("write micro vm initramfs: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(buf.Bytes()); err != nil {
		tmp.Close()
		return Micro{}, fmt.Errorf("write micro vm initramfs: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return Micro{}, fmt.Errorf("write micro vm initramfs: %w", err)
	}
	if err := os.Rename(tmp.Name(), m.Initrd); err != nil {
		return Micro{}, fmt.Errorf("write micro vm initramfs: %w", err)
	}
	return m, nil
}

// busyboxPaths are where distributions put busybox.
var busyboxPaths = []string{"/bin/busybox", "/usr/bin/busybox", "/usr/lib/initramfs-tools/bin/busybox"}

// hostBusybox finds a statically linked busybox: a dynamic one would need
// the host's libraries inside the guest.
func hostBusybox(paths []string) (string, error) {
	for _, p := range paths {
		if isStatic(p) {
			return p, nil
		}
	}
	if p, err := exec.LookPath("busybox"); err == nil && isStatic(p) && len(paths) > 0 {
		return p, nil
	}
	return "", errors.New("a VM with no image needs a static busybox on the host for its shell: install it (Debian: apt-get install busybox-static), or give --kernel and --initrd, or an IMAGE")
}

// isStatic reports whether path is an ELF executable with no interpreter.
func isStatic(path string) bool {
	f, err := elf.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return false
		}
	}
	return true
}

func microKey(release, busybox string, init []byte) (string, error) {
	h := sha256.New()
	if busybox != "" {
		fi, err := os.Stat(busybox)
		if err != nil {
			return "", fmt.Errorf("stat busybox: %w", err)
		}
		fmt.Fprintf(h, "%s %d %s\n", busybox, fi.Size(), fi.ModTime())
	}
	h.Write(init)
	for _, s := range []string{microVersion, release, UdhcpcScript} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}
