package testguest

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/hutch-vm/hutch/test/testproc"
)

// buildTimeout bounds each tool that makes a boot image.
const buildTimeout = 5 * time.Minute

// UEFIOnlyImage writes into dir, from Debian's grub-efi-amd64-bin, a disk
// only UEFI can boot: a FAT filesystem with no boot code of its own,
// holding EFI/BOOT/BOOTX64.EFI (a standalone GRUB) that boots g's kernel
// and initramfs on the serial console. It returns the image's path.
func UEFIOnlyImage(dir string, g Guest) (string, error) {
	cfg := filepath.Join(dir, "grub.cfg")
	if err := os.WriteFile(cfg, []byte("set timeout=0\nserial --unit=0 --speed=115200\nterminal_output serial\n"+
		"search --no-floppy --file /vmlinuz --set=root\nlinux /vmlinuz console=ttyS0\ninitrd /initrd.gz\nboot\n"), 0o644); err != nil {
		return "", err
	}
	efi := filepath.Join(dir, "BOOTX64.EFI")
	img := filepath.Join(dir, "uefi.img")
	err := runAll([][]string{
		{"grub-mkstandalone", "-O", "x86_64-efi", "-o", efi, "boot/grub/grub.cfg=" + cfg},
		{"truncate", "-s", "96M", img},
		{"mkfs.vfat", "-F", "32", img},
		{"mmd", "-i", img, "::/EFI", "::/EFI/BOOT"},
		{"mcopy", "-i", img, efi, "::/EFI/BOOT/BOOTX64.EFI"},
		{"mcopy", "-i", img, g.Kernel, "::/vmlinuz"},
		{"mcopy", "-i", img, g.Initrd, "::/initrd.gz"},
	})
	if err != nil {
		return "", err
	}
	return img, os.Chmod(img, 0o644)
}

// InstallerISO writes into dir, from Debian's isolinux and
// syslinux-common, a CD that boots g with hutch.cd=1 on its command line
// and powers off once up, as an installer ends. It returns the ISO's path.
func InstallerISO(dir string, g Guest) (string, error) {
	root := filepath.Join(dir, "iso")
	if err := os.MkdirAll(filepath.Join(root, "isolinux"), 0o755); err != nil {
		return "", err
	}
	cfg := "DEFAULT cd\nLABEL cd\n  KERNEL /vmlinuz\n  APPEND initrd=/initrd.gz console=ttyS0 hutch.cd=1 " + PoweroffArg + "\n"
	if err := os.WriteFile(filepath.Join(root, "isolinux", "isolinux.cfg"), []byte(cfg), 0o644); err != nil {
		return "", err
	}
	iso := filepath.Join(dir, "installer.iso")
	err := runAll([][]string{
		{"cp", "/usr/lib/ISOLINUX/isolinux.bin", "/usr/lib/syslinux/modules/bios/ldlinux.c32", filepath.Join(root, "isolinux")},
		{"cp", g.Kernel, filepath.Join(root, "vmlinuz")},
		{"cp", g.Initrd, filepath.Join(root, "initrd.gz")},
		{"xorriso", "-as", "mkisofs", "-quiet", "-o", iso, "-b", "isolinux/isolinux.bin", "-c", "isolinux/boot.cat",
			"-no-emul-boot", "-boot-load-size", "4", "-boot-info-table", root},
	})
	if err != nil {
		return "", err
	}
	return iso, os.Chmod(iso, 0o644)
}

func runAll(cmds [][]string) error {
	for _, c := range cmds {
		if out, err := testproc.CommandTimeout(buildTimeout, c[0], c[1:]...).CombinedOutput(); err != nil {
			return fmt.Errorf("%v: %w: %s (install the packages of make deps)", c, err, out)
		}
	}
	return nil
}
