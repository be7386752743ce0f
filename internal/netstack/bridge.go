package netstack

import (
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// BridgeHelper is QEMU's setuid helper that makes a tap on a bridge the
// host's administrator allowed in /etc/qemu/bridge.conf. It is the one
// sanctioned way for an unprivileged user to put a VM on a bridge.
const BridgeHelper = "/usr/lib/qemu/qemu-bridge-helper"

// BridgeACL is where the helper reads which bridges users may join.
const BridgeACL = "/etc/qemu/bridge.conf"

var bridgeRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,14}$`)

// ValidBridge checks a bridge name as the kernel limits interface names.
func ValidBridge(name string) error {
	if !bridgeRE.MatchString(name) {
		return fmt.Errorf("invalid bridge name %q: an interface name of 1-15 letters, digits, '_', '.' or '-'", name)
	}
	return nil
}

// CheckBridgeHelper says, before anything starts, why the helper cannot
// work for this user; nil when it can (its ACL decides at run time).
func CheckBridgeHelper(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("--network bridge needs %s, which is missing: install it (Debian: apt-get install qemu-system-common)", path)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if os.Geteuid() != 0 && (fi.Mode()&os.ModeSetuid == 0 || !ok || st.Uid != 0) {
		return fmt.Errorf("--network bridge: %s is not setuid root, so it cannot create a tap for you; run: sudo chmod u+s %s", path, path)
	}
	return nil
}

// TapNetdev is the -netdev value for a tap QEMU inherits as fd.
func TapNetdev(id string, fd int) string {
	return "tap,id=" + id + ",fd=" + strconv.Itoa(fd)
}

// OpenBridgeTap runs the helper and returns the tap it opened, received
// over a socketpair as QEMU itself would receive it. Running it here
// rather than from QEMU lets QEMU keep its sandbox's spawn=deny.
func OpenBridgeTap(helper, bridge string) (*os.File, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("bridge helper socketpair: %w", err)
	}
	ours := os.NewFile(uintptr(fds[0]), "bridge-helper")
	theirs := os.NewFile(uintptr(fds[1]), "bridge-helper-child")
	defer ours.Close()
	cmd := exec.Command(helper, "--use-vnet", "--br="+bridge, "--fd=3")
	cmd.Env = []string{}
	cmd.ExtraFiles = []*os.File{theirs}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	err = cmd.Run()
	theirs.Close()
	if err != nil {
		msg := strings.TrimSpace(stderr.String())
		if strings.Contains(msg, "access denied") || strings.Contains(msg, "acl") {
			return nil, fmt.Errorf("bridge %q is not allowed for this user by %s (%s): add the line \"allow %s\" to it", bridge, BridgeACL, msg, bridge)
		}
		return nil, fmt.Errorf("%s for bridge %q failed: %s", helper, bridge, msg)
	}
	buf := make([]byte, 1)
	oob := make([]byte, unix.CmsgSpace(4))
	_, oobn, _, _, err := unix.Recvmsg(fds[0], buf, oob, 0)
	if err != nil {
		return nil, fmt.Errorf("receive tap from bridge helper: %w", err)
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		return nil, fmt.Errorf("bridge helper sent no tap descriptor")
	}
	tapFDs, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(tapFDs) != 1 {
		return nil, fmt.Errorf("bridge helper sent no tap descriptor")
	}
	unix.CloseOnExec(tapFDs[0])
	return os.NewFile(uintptr(tapFDs[0]), "tap"), nil
}
