package e2e

import (
	"os"
	"strings"
	"testing"
)

// Bad input: one clear line naming the problem, exit 2 for usage and 1 for
// failures, and nothing changed on disk.
func TestBadInputChangesNothing(t *testing.T) {
	t.Parallel()
	u := newUser(t, "hutchtest1")
	// A VM that exists, stopped, so a duplicate name has something to hit.
	u.ok("run", "-d", "--name", "taken", "--memory", "64M", "--network", "none",
		"--kernel", guest.Kernel, "--initrd", guest.Initrd, "--append", "console=ttyS0")
	u.ok("kill", "taken")

	secret := openDir(t) + "/vmlinuz"
	copyFile(t, guest.Kernel, secret)
	os.Chmod(secret, 0o600) // root's, unreadable to the test user

	k := []string{"--kernel", guest.Kernel, "--initrd", guest.Initrd}
	tests := []struct {
		name string
		args []string
		env  []string
		code int
		want string
	}{
		{"slash in name", append([]string{"run", "-d", "--name", "a/b"}, k...), nil, 2, `invalid name "a/b"`},
		{"dotdot name", append([]string{"run", "-d", "--name", ".."}, k...), nil, 2, `invalid name ".."`},
		{"duplicate name", append([]string{"run", "-d", "--name", "taken"}, k...), nil, 2, `a vm named "taken" already exists`},
		{"zero memory", append([]string{"run", "-d", "--memory", "0"}, k...), nil, 2, "needs at least 16M"},
		{"memory lots", append([]string{"run", "-d", "--memory", "lots"}, k...), nil, 2, `invalid --memory "lots"`},
		{"missing kernel", []string{"run", "-d", "--kernel", "/nonexistent/vmlinuz"}, nil, 2, "--kernel /nonexistent/vmlinuz does not exist"},
		{"unreadable kernel", []string{"run", "-d", "--kernel", secret}, nil, 2, "this user cannot read it"},
		{"missing image", []string{"run", "-d", "/nonexistent/disk.qcow2"}, nil, 2, "IMAGE /nonexistent/disk.qcow2 does not exist"},
		{"unknown flag", append([]string{"run", "-d", "--bogus"}, k...), nil, 2, "unknown flag: --bogus"},
		{"unknown command", []string{"frobnicate"}, nil, 2, "unknown command"},
		{"bad port", append([]string{"run", "-d", "-p", "70000:80"}, k...), nil, 2, "70000 is out of range"},
		{"initrd without kernel", []string{"run", "-d", "--initrd", guest.Initrd}, nil, 2, "--initrd and --append need --kernel"},
		{"port without host port", append([]string{"run", "-d", "-p", "80"}, k...), nil, 2, "a host port is required"},
		{"port not a number", append([]string{"run", "-d", "-p", "a:b"}, k...), nil, 2, `"a" is not a number`},
		{"port ranges differ", append([]string{"run", "-d", "-p", "1-3:1-2"}, k...), nil, 2, "ranges differ in length"},
		{"bad network", append([]string{"run", "-d", "--network", "carrier-pigeon"}, k...), nil, 2, "unknown --network"},
		{"no qemu on PATH", append([]string{"run", "-d"}, k...), []string{"PATH=/var/empty"}, 1, "qemu-system-x86_64 not found on PATH"},
		{"rm of unknown vm", []string{"rm", "ghost"}, nil, 1, "no such vm: ghost"},
		{"inspect without name", []string{"inspect"}, nil, 2, "accepts 1 arg"},
		{"negative stop time", []string{"stop", "-t", "-1", "taken"}, nil, 2, "invalid -t -1"},
	}
	before := u.tree()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := u.cmd(tt.args...)
			c.Env = append(append([]string{}, u.env...), tt.env...)
			r := u.runCmd(c)
			if r.code != tt.code || !strings.Contains(r.err, tt.want) {
				t.Errorf("hutch %s: %v; want exit %d and %q", strings.Join(tt.args, " "), r, tt.code, tt.want)
			}
			if lines := strings.Count(strings.TrimSpace(r.err), "\n") + 1; lines != 1 || !strings.HasPrefix(r.err, "hutch: ") {
				t.Errorf("hutch %s: stderr is not one 'hutch: ' line: %q", strings.Join(tt.args, " "), r.err)
			}
			if after := u.tree(); after != before {
				t.Errorf("hutch %s changed state:\nbefore:\n%s\nafter:\n%s", strings.Join(tt.args, " "), before, after)
			}
		})
	}
}
