package e2e

import (
	"strings"
	"testing"
	"time"
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
