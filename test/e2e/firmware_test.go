package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hutch-vm/hutch/test/testguest"
)

func uefiOnlyImage(t *testing.T) string {
	t.Helper()
	img, err := testguest.UEFIOnlyImage(openDir(t), guest)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func installerISO(t *testing.T) string {
	t.Helper()
	iso, err := testguest.InstallerISO(openDir(t), guest)
	if err != nil {
		t.Fatal(err)
	}
	return iso
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

// --cdrom boots the CD first; once the guest has shut down, the VM
// boots its disk, with the CD still attached.
func TestCDROMInstall(t *testing.T) {
	t.Parallel()
	u := newUser(t, "hutchtest1")
	iso := installerISO(t)
	u.ok("run", "-d", "--name", "inst", "--cdrom", iso, "--memory", "256M", "--network", "none", guest.DiskImage)
	if !waitFor(3*time.Minute, func() bool { return u.inspect("inst").State == "stopped" }) {
		t.Fatalf("the installer never ended; log:\n%s", tail(u.run("logs", "inst").out, 2000))
	}
	if log := u.run("logs", "inst").out; !strings.Contains(log, "hutch.cd=1") || !strings.Contains(log, guest.Marker) {
		t.Fatalf("the first boot was not the CD's; log:\n%s", tail(log, 2000))
	}
	v := u.inspect("inst")
	if len(v.Disks) != 2 || v.Disks[1].Source != "--cdrom" {
		t.Errorf("inspect disks = %+v, want the image and the CD", v.Disks)
	}
	u.ok("start", "inst")
	if !waitFor(3*time.Minute, func() bool { return strings.Count(u.run("logs", "inst").out, guest.Marker) == 2 }) {
		t.Fatalf("the second boot never came up; log:\n%s", tail(u.run("logs", "inst").out, 2000))
	}
	log := u.run("logs", "inst").out
	if n := strings.Count(log, "Booting from DVD/CD"); n != 1 || !strings.Contains(log, "Booting from Hard Disk") {
		t.Errorf("after the install the VM booted from the CD %d times in all, want once and then the disk:\n%s", n, tail(log, 2000))
	}
}

// A guest that writes nothing to its serial console is flagged once it
// has been silent for a minute, in inspect and in ps.
func TestSilentConsoleWarns(t *testing.T) {
	t.Parallel()
	u := newUser(t, "hutchtest1")
	// A kernel boot whose console is not the serial port: QEMU and the
	// guest run, and nothing reaches the log.
	u.ok("run", "-d", "--name", "quiet", "--memory", "256M", "--network", "none", "--kernel", guest.Kernel,
		"--initrd", guest.Initrd, "--append", "console=tty0 quiet loglevel=0")
	if !waitFor(3*time.Minute, func() bool { return strings.Contains(u.inspect("quiet").Warning, "serial console has been silent") }) {
		t.Fatalf("no warning for a silent console: %+v; log %q", u.inspect("quiet"), tail(u.run("logs", "quiet").out, 300))
	}
	if out := u.ok("ps"); !strings.Contains(out, "(silent console)") {
		t.Errorf("ps does not flag the silent console:\n%s", out)
	}
}
