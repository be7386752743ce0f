package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hutch-vm/hutch/test/testproc"
)

// uefiOnlyImage builds, from Debian's grub-efi-amd64-bin and the test
// guest, a disk that only UEFI can boot: a FAT filesystem with no boot
// sector code, holding EFI/BOOT/BOOTX64.EFI (a standalone GRUB) that
// boots the test guest's kernel and initramfs.
func uefiOnlyImage(t *testing.T) string {
	t.Helper()
	dir := openDir(t)
	cfg := filepath.Join(dir, "grub.cfg")
	os.WriteFile(cfg, []byte("set timeout=0\nserial --unit=0 --speed=115200\nterminal_output serial\n"+
		"search --no-floppy --file /vmlinuz --set=root\nlinux /vmlinuz console=ttyS0\ninitrd /initrd.gz\nboot\n"), 0o644)
	efi := filepath.Join(dir, "BOOTX64.EFI")
	img := filepath.Join(dir, "uefi.img")
	for _, c := range [][]string{
		{"grub-mkstandalone", "-O", "x86_64-efi", "-o", efi, "boot/grub/grub.cfg=" + cfg},
		{"truncate", "-s", "96M", img},
		{"mkfs.vfat", "-F", "32", img},
		{"mmd", "-i", img, "::/EFI", "::/EFI/BOOT"},
		{"mcopy", "-i", img, efi, "::/EFI/BOOT/BOOTX64.EFI"},
		{"mcopy", "-i", img, guest.Kernel, "::/vmlinuz"},
		{"mcopy", "-i", img, guest.Initrd, "::/initrd.gz"},
	} {
		if out, err := testproc.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v: %s (install the packages of make deps)", c, err, out)
		}
	}
	os.Chmod(img, 0o644)
	return img
}

// --firmware uefi boots a UEFI-only disk with OVMF and a variable store
// of the VM's own; the BIOS, given the same disk, says in the VM's log
// that it found nothing to boot instead of running silently.
func TestFirmwareUEFI(t *testing.T) {
	t.Parallel()
	u := newUser(t, "hutchtest2")
	img := uefiOnlyImage(t)
	u.ok("run", "-d", "--name", "efi", "--firmware", "uefi", "--memory", "256M", "--network", "none", img)
	if !waitFor(3*time.Minute, func() bool { return strings.Contains(u.run("logs", "efi").out, guest.Marker) }) {
		t.Fatalf("the UEFI vm never printed the marker; log:\n%s", tail(u.run("logs", "efi").out, 2000))
	}
	vars := filepath.Join(vmDataDir(u, "efi"), "uefi-vars.fd")
	if fi, err := os.Stat(vars); err != nil || fi.Mode().Perm() != 0o600 || fi.Size() == 0 {
		t.Errorf("the vm's variable store %s: %v, %v", vars, fi, err)
	}

	u.ok("run", "-d", "--name", "bios", "--memory", "256M", "--network", "none", img)
	if !waitFor(2*time.Minute, func() bool {
		out := u.run("logs", "bios").out
		return strings.Contains(out, "Booting from Hard Disk") && strings.Contains(out, "not a bootable disk")
	}) {
		t.Errorf("the BIOS vm's log does not say it found nothing to boot:\n%s", tail(u.run("logs", "bios").out, 2000))
	}
}
