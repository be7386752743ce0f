package e2e

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	ownguest "github.com/hutch-vm/hutch/internal/guest"
	"github.com/hutch-vm/hutch/test/testproc"
)

// With no image and no kernel, hutch boots the host's kernel with an
// initramfs it builds, ending in a shell; leaving the shell powers it off.
func TestMicroVMWithNothingDownloaded(t *testing.T) {
	t.Parallel()
	u := newUser(t, "hutchtest2")
	u.ok("run", "-d", "--rm", "--name", "micro", "--memory", "256M")
	u.waitLog("micro", "exit the shell to power off")
	logs := u.ok("logs", "micro")
	if !strings.Contains(logs, "Linux version") {
		t.Errorf("logs do not show the kernel booting:\n%s", tail(logs, 1500))
	}
	consoleSession(t, u, "micro")
	guestShell(t, u, "micro", "exit", "Power down")
	if !waitFor(30*time.Second, func() bool { return u.run("inspect", "micro").code != 0 }) {
		t.Fatalf("the --rm micro vm did not go away after its shell exited: %v", u.run("inspect", "micro"))
	}
}

// On a host without busybox, a static hutch is the micro VM's init: it
// boots, loads the modules, answers on the console and powers off.
func TestMicroVMOwnInit(t *testing.T) {
	t.Parallel()
	u := newUser(t, "hutchtest1")
	dir := openDir(t)
	static := filepath.Join(dir, "hutch-static")
	_, here, _, _ := runtime.Caller(0)
	build := testproc.Command("go", "build", "-o", static, "./cmd/hutch")
	build.Dir = filepath.Join(filepath.Dir(here), "..", "..")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build a static hutch: %v: %s", err, out)
	}
	init, err := os.ReadFile(static)
	if err != nil {
		t.Fatal(err)
	}
	kernel, release, err := ownguest.FindHostKernel("/boot", "/lib/modules")
	if err != nil {
		t.Fatal(err)
	}
	initrd := filepath.Join(dir, "initrd.gz")
	f, err := os.Create(initrd)
	if err != nil {
		t.Fatal(err)
	}
	ird := ownguest.Initramfs{ModDir: "/lib/modules/" + release, Modules: []string{"virtio_pci"}, Init: init}
	if err := ird.Write(f); err != nil {
		t.Fatal(err)
	}
	f.Close()
	os.Chmod(initrd, 0o644)
	u.ok("run", "-d", "--name", "own", "--memory", "256M", "--network", "none", "--kernel", kernel, "--initrd", initrd, "--append", "console=ttyS0")
	u.waitLog("own", "hutch's own init")
	guestShell(t, u, "own", "cat /proc/version", "Linux version")
	guestShell(t, u, "own", "poweroff", "Power down")
	if !waitFor(30*time.Second, func() bool { return u.inspect("own").State == "stopped" }) {
		t.Fatal("the vm did not stop after poweroff")
	}
}
