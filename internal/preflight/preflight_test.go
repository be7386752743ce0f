package preflight

import (
	"encoding/json"
	"errors"
	"io/fs"
	"path"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"

	"github.com/hutch-vm/hutch/internal/accel"
)

// fakeFile is one path on a fake host.
type fakeFile struct {
	data     string
	mode     fs.FileMode
	uid, gid int
}

// fakeHost is a host made of maps. Permissions are judged from the
// files' modes the way the kernel judges them, so a test changes a mode
// or a group list, not an answer.
type fakeHost struct {
	files   map[string]fakeFile
	paths   map[string]string // LookPath
	outputs map[string]fakeOutput
	openErr map[string]error // an OpenRW refused although the mode allows it
	user    User
	userErr error
	env     map[string]string
	release string
	fstypes map[string]int64
	kvm     *accel.Probe // nil: KVM works
}

type fakeOutput struct {
	out string
	err error
}

func file(data string) fakeFile { return fakeFile{data: data, mode: 0o644} }
func dir(mode fs.FileMode, uid, gid int) fakeFile {
	return fakeFile{mode: fs.ModeDir | mode, uid: uid, gid: gid}
}
func chardev(mode fs.FileMode, uid, gid int) fakeFile {
	return fakeFile{mode: fs.ModeDevice | fs.ModeCharDevice | mode, uid: uid, gid: gid}
}

const cgroupPath = "/user.slice/user-1000.slice/user@1000.service/app.slice/hutch.scope"

// healthy is a host on which every check passes.
func healthy() *fakeHost {
	return &fakeHost{
		files: map[string]fakeFile{
			"/etc/passwd":                 file("root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\nbob:x:1001:1001::/home/bob:/bin/sh\n"),
			"/etc/group":                  file("root:x:0:\nkvm:x:107:alice\nalice:x:1000:\nbob:x:1001:\n"),
			"/etc/os-release":             file("ID=debian\nVERSION_ID=12\n"),
			"/proc/cpuinfo":               file("processor\t: 0\nflags\t\t: fpu vme vmx sse\n"),
			"/dev/kvm":                    chardev(0o660, 0, 107),
			"/dev/vhost-net":              chardev(0o660, 0, 107),
			"/run/user/1000":              dir(0o700, 1000, 1000),
			"/proc/self/cgroup":           file("0::" + cgroupPath + "\n"),
			"/sys/fs/cgroup" + cgroupPath: dir(0o755, 1000, 1000),
			"/sys/fs/cgroup" + cgroupPath + "/cgroup.procs":          {mode: 0o644, uid: 1000, gid: 1000},
			"/proc/self/ns/user":                                     file(""),
			"/proc/sys/user/max_user_namespaces":                     file("15000\n"),
			"/proc/sys/kernel/unprivileged_userns_clone":             file("1\n"),
			"/proc/sys/kernel/apparmor_restrict_unprivileged_userns": file("0\n"),
			"/etc/subuid":                             file("alice:100000:65536\n"),
			"/etc/subgid":                             file("alice:100000:65536\n"),
			"/usr/lib/qemu/qemu-bridge-helper":        {mode: fs.ModeSetuid | 0o755},
			"/etc/qemu/bridge.conf":                   file("allow br0\n"),
			"/boot":                                   dir(0o755, 0, 0),
			"/boot/vmlinuz-6.1.0-10-amd64":            file("kernel"),
			"/boot/config-6.1.0-10-amd64":             file(""),
			"/lib/modules/6.1.0-10-amd64":             dir(0o755, 0, 0),
			"/lib/modules/6.1.0-10-amd64/modules.dep": file(""),
		},
		paths: map[string]string{
			"qemu-system-x86_64": "/usr/bin/qemu-system-x86_64",
			"qemu-img":           "/usr/bin/qemu-img",
			"passt":              "/usr/bin/passt",
		},
		outputs: map[string]fakeOutput{
			"/usr/bin/qemu-system-x86_64 --version": {out: "QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7)\nCopyright\n"},
			"/usr/bin/qemu-img --version":           {out: "qemu-img version 7.2.22 (Debian 1:7.2+dfsg-7)\n"},
		},
		openErr: map[string]error{},
		user:    User{UID: 1000, Name: "alice", GID: 1000, Groups: []int{107, 1000}},
		env:     map[string]string{"XDG_RUNTIME_DIR": "/run/user/1000"},
		release: "6.1.0-10-amd64",
		fstypes: map[string]int64{"/sys/fs/cgroup": cgroup2Magic},
	}
}

func (h *fakeHost) lookup(op, p string) (fakeFile, error) {
	f, found := h.files[p]
	if !found {
		return f, &fs.PathError{Op: op, Path: p, Err: syscall.ENOENT}
	}
	return f, nil
}

func (h *fakeHost) Lstat(p string) (File, error) {
	f, err := h.lookup("lstat", p)
	return File{Mode: f.mode, UID: f.uid, GID: f.gid}, err
}

func (h *fakeHost) Stat(p string) (File, error) {
	f, err := h.lookup("stat", p)
	if err == nil && f.mode&fs.ModeSymlink != 0 {
		return h.Stat(f.data)
	}
	return File{Mode: f.mode, UID: f.uid, GID: f.gid}, err
}

// allowed judges mode bits (4 read, 2 write, 1 exec) as the kernel does.
func (h *fakeHost) allowed(f fakeFile, want uint32) bool {
	if h.user.UID == 0 {
		return true
	}
	perm := uint32(f.mode.Perm())
	switch {
	case f.uid == h.user.UID:
		perm >>= 6
	case slices.Contains(h.user.Groups, f.gid):
		perm >>= 3
	}
	return perm&want == want
}

func (h *fakeHost) ReadFile(p string) ([]byte, error) {
	f, err := h.lookup("open", p)
	if err != nil {
		return nil, err
	}
	if !h.allowed(f, ReadOK) {
		return nil, &fs.PathError{Op: "open", Path: p, Err: syscall.EACCES}
	}
	return []byte(f.data), nil
}

func (h *fakeHost) ReadDir(p string) ([]string, error) {
	if _, err := h.lookup("open", p); err != nil {
		return nil, err
	}
	var names []string
	for k := range h.files {
		if path.Dir(k) == p {
			names = append(names, path.Base(k))
		}
	}
	sort.Strings(names)
	return names, nil
}

func (h *fakeHost) Access(p string, mode uint32) error {
	f, err := h.lookup("access", p)
	if err != nil {
		return err
	}
	if !h.allowed(f, mode) {
		return &fs.PathError{Op: "access", Path: p, Err: syscall.EACCES}
	}
	return nil
}

func (h *fakeHost) OpenRW(p string) error {
	f, err := h.lookup("open", p)
	if err != nil {
		return err
	}
	if err := h.openErr[p]; err != nil {
		return err
	}
	if !h.allowed(f, ReadOK|WriteOK) {
		return &fs.PathError{Op: "open", Path: p, Err: syscall.EACCES}
	}
	return nil
}

func (h *fakeHost) LookPath(name string) (string, error) {
	if p, found := h.paths[name]; found {
		return p, nil
	}
	return "", errors.New("exec: " + name + ": executable file not found in $PATH")
}

func (h *fakeHost) Output(name string, args ...string) (string, error) {
	o, found := h.outputs[strings.Join(append([]string{name}, args...), " ")]
	if !found {
		return "", errors.New(name + ": no such program")
	}
	return o.out, o.err
}

func (h *fakeHost) ProbeKVM(device string) accel.Probe {
	if h.kvm == nil {
		return accel.Probe{Device: device, Usable: true}
	}
	return *h.kvm
}

func (h *fakeHost) User() (User, error)      { return h.user, h.userErr }
func (h *fakeHost) Getenv(key string) string { return h.env[key] }

func (h *fakeHost) KernelRelease() (string, error) {
	if h.release == "" {
		return "", errors.New("uname: operation not permitted")
	}
	return h.release, nil
}

func (h *fakeHost) FSType(p string) (int64, error) {
	m, found := h.fstypes[p]
	if !found {
		return 0, &fs.PathError{Op: "statfs", Path: p, Err: syscall.ENOENT}
	}
	return m, nil
}

func find(t *testing.T, rs []Result, check string) Result {
	t.Helper()
	for _, r := range rs {
		if r.Check == check {
			return r
		}
	}
	t.Fatalf("no check %q in %v", check, rs)
	return Result{}
}

func TestHealthyHostIsAllOK(t *testing.T) {
	rs := Run(healthy())
	if len(rs) != len(Checks) {
		t.Fatalf("Run gave %d results for %d checks", len(rs), len(Checks))
	}
	seen := map[string]bool{}
	for _, r := range rs {
		if r.Status != OK || r.Fix != "" || r.Detail == "" {
			t.Errorf("%s: %+v, want ok with a detail and no fix", r.Check, r)
		}
		if seen[r.Check] {
			t.Errorf("check %q reported twice", r.Check)
		}
		seen[r.Check] = true
		if strings.Contains(r.Detail, "\n") {
			t.Errorf("%s: detail is more than one line: %q", r.Check, r.Detail)
		}
	}
	if !CanRunVMs(rs) {
		t.Error("CanRunVMs is false on a healthy host")
	}
}

// Every way a check can go wrong: what the host looks like, what the
// check says, and a word its detail and fix must contain.
func TestProblems(t *testing.T) {
	del := func(paths ...string) func(*fakeHost) {
		return func(h *fakeHost) {
			for _, p := range paths {
				delete(h.files, p)
			}
		}
	}
	put := func(p string, f fakeFile) func(*fakeHost) {
		return func(h *fakeHost) { h.files[p] = f }
	}
	both := func(fs ...func(*fakeHost)) func(*fakeHost) {
		return func(h *fakeHost) {
			for _, f := range fs {
				f(h)
			}
		}
	}
	cgroupDir := "/sys/fs/cgroup" + cgroupPath
	tests := []struct {
		name   string
		check  string
		host   func(*fakeHost)
		status string
		detail string // in Detail
		fix    string // in Fix
	}{
		{"unknown user", "user", func(h *fakeHost) { h.userErr = errors.New("getgroups: EINVAL") }, Fail, "cannot tell who", "login shell"},

		{"old kernel", "kernel-version", func(h *fakeHost) { h.release = "4.9.0-8-amd64" }, Fail, "older than 4.14", "apt-get install linux-image-amd64"},
		{"old kernel on fedora", "kernel-version", both(func(h *fakeHost) { h.release = "3.10.0-1160.el7.x86_64" },
			put("/etc/os-release", file("ID=\"centos\"\nID_LIKE=\"rhel fedora\"\n"))), Fail, "older than 4.14", "dnf install kernel"},
		{"odd release", "kernel-version", func(h *fakeHost) { h.release = "mainline" }, Warn, "cannot parse", "uname -r"},
		{"no uname", "kernel-version", func(h *fakeHost) { h.release = "" }, Warn, "cannot read", "uname -r"},

		{"no /dev/kvm, intel", "kvm", del("/dev/kvm"), Warn, "/dev/kvm does not exist", "modprobe kvm_intel"},
		{"no /dev/kvm, amd", "kvm", both(del("/dev/kvm"), put("/proc/cpuinfo", file("flags : fpu svm\n"))), Warn, "TCG", "modprobe kvm_amd"},
		{"no /dev/kvm, no vt-x", "kvm", both(del("/dev/kvm"), put("/proc/cpuinfo", file("flags : fpu hypervisor\n"))), Warn, "does not exist", "enable VT-x/AMD-V"},
		{"no /dev/kvm, module loaded", "kvm", both(del("/dev/kvm"), put("/sys/module/kvm_intel", dir(0o755, 0, 0))), Warn, "does not exist", "mknod"},
		{"/dev/kvm a file", "kvm", put("/dev/kvm", file("")), Warn, "not a character device", "mknod"},
		{"/dev/kvm 0600", "kvm", put("/dev/kvm", chardev(0o600, 0, 107)), Warn, "root:kvm 0600: group kvm has no read-write", "chmod 0660 /dev/kvm"},
		{"/dev/kvm group root", "kvm", put("/dev/kvm", chardev(0o660, 0, 0)), Warn, "root:root 0660: group root", "chgrp kvm /dev/kvm"},
		{"not in kvm group", "kvm", both(func(h *fakeHost) { h.user.Groups = []int{1000} },
			put("/etc/group", file("kvm:x:107:\nalice:x:1000:\n"))), Warn, "alice is not in group kvm", "sudo usermod -aG kvm alice && newgrp kvm"},
		{"added but not logged in again", "kvm", func(h *fakeHost) { h.user.Groups = []int{1000} }, Warn, "in /etc/group but not in this login's groups", "log out and back in"},
		{"kvm primary group, other login", "kvm", both(func(h *fakeHost) { h.user.GID, h.user.Groups = 107, []int{1000} },
			put("/etc/group", file("kvm:x:107:\n"))), Warn, "not in this login's groups", "log out"},
		{"device cgroup refuses", "kvm", func(h *fakeHost) {
			h.openErr["/dev/kvm"] = &fs.PathError{Op: "open", Path: "/dev/kvm", Err: syscall.EPERM}
		},
			Warn, "mode allows it but the open fails (operation not permitted)", "--device /dev/kvm"},

		{"kvm works", "accel", func(h *fakeHost) {}, OK, "VMs use KVM", ""},
		{"nested kvm without sse3", "accel", func(h *fakeHost) {
			h.kvm = &accel.Probe{Device: "/dev/kvm", Nested: true, Why: "KVM offers no SSE3"}
		}, Warn, "/dev/kvm is present but unusable: KVM offers no SSE3 (nested virtualisation without CPU features?); VMs run under TCG", "nested virtualisation"},
		{"no kvm device", "accel", func(h *fakeHost) {
			h.kvm = &accel.Probe{Device: "/dev/kvm", Why: "does not exist (no hardware virtualisation here)"}
		}, Warn, "/dev/kvm does not exist", "see the kvm row"},

		{"no kvm group", "kvm-group", put("/etc/group", file("root:x:0:\n")), Warn, "no kvm group", "groupadd --system kvm && sudo chgrp kvm /dev/kvm"},
		{"no kvm group, no device", "kvm-group", both(put("/etc/group", file("root:x:0:\n")), del("/dev/kvm")), Warn, "no kvm group", "groupadd --system kvm"},
		{"/dev/kvm in another group", "kvm-group", put("/dev/kvm", chardev(0o660, 0, 36)), Warn, "belongs to gid 36, not kvm (gid 107)", "chgrp kvm /dev/kvm"},

		{"no qemu", "qemu", func(h *fakeHost) { delete(h.paths, "qemu-system-x86_64") }, Fail, "qemu-system-x86_64 not found", "apt-get install qemu-system-x86"},
		{"broken qemu", "qemu", func(h *fakeHost) {
			h.outputs["/usr/bin/qemu-system-x86_64 --version"] = fakeOutput{err: errors.New("exit status 127: libslirp.so.0: cannot open shared object file")}
		}, Fail, "does not run: exit status 127", "install --reinstall qemu-system-x86"},
		{"old qemu", "qemu", func(h *fakeHost) {
			h.outputs["/usr/bin/qemu-system-x86_64 --version"] = fakeOutput{out: "QEMU emulator version 6.2.0 (Debian 1:6.2+dfsg-2)\n"}
		}, Warn, "QEMU 6.2.0", "--network slirp"},
		{"qemu without version", "qemu", func(h *fakeHost) {
			h.outputs["/usr/bin/qemu-system-x86_64 --version"] = fakeOutput{out: "hello\n"}
		}, Warn, "printed no version", "--version"},

		{"no qemu-img", "qemu-img", func(h *fakeHost) { delete(h.paths, "qemu-img") }, Warn, "qemu-img not found", "apt-get install qemu-utils"},
		{"broken qemu-img", "qemu-img", func(h *fakeHost) {
			h.outputs["/usr/bin/qemu-img --version"] = fakeOutput{err: errors.New("exit status 1")}
		}, Warn, "does not run", "--reinstall qemu-utils"},

		{"no passt", "passt", func(h *fakeHost) { delete(h.paths, "passt") }, Warn, "slirp", "apt-get install passt"},
		{"no passt on fedora", "passt", both(func(h *fakeHost) { delete(h.paths, "passt") }, put("/etc/os-release", file("ID=fedora\n"))), Warn, "slirp", "dnf install passt"},

		{"XDG_RUNTIME_DIR unset", "runtime-dir", func(h *fakeHost) { delete(h.env, "XDG_RUNTIME_DIR") }, Warn, "unset: hutch keeps its sockets in /tmp/hutch-1000", "export XDG_RUNTIME_DIR=/run/user/1000"},
		{"XDG_RUNTIME_DIR unset, no session", "runtime-dir", both(func(h *fakeHost) { delete(h.env, "XDG_RUNTIME_DIR") }, del("/run/user/1000")),
			Warn, "unset", "loginctl enable-linger alice"},
		{"XDG_RUNTIME_DIR relative", "runtime-dir", func(h *fakeHost) { h.env["XDG_RUNTIME_DIR"] = "run" }, Fail, "not an absolute path", "export XDG_RUNTIME_DIR=/run/user/1000"},
		{"XDG_RUNTIME_DIR missing", "runtime-dir", func(h *fakeHost) { h.env["XDG_RUNTIME_DIR"] = "/nonexistent" }, Fail, "/nonexistent: no such file", "XDG_RUNTIME_DIR"},
		{"XDG_RUNTIME_DIR symlink", "runtime-dir", both(func(h *fakeHost) { h.env["XDG_RUNTIME_DIR"] = "/tmp/rt" },
			put("/tmp/rt", fakeFile{data: "/run/user/1000", mode: fs.ModeSymlink | 0o777, uid: 1000})), Fail, "not a directory", "export"},
		{"XDG_RUNTIME_DIR someone else's", "runtime-dir", put("/run/user/1000", dir(0o700, 1001, 1001)), Fail, "owned by uid 1001, not alice", "unset XDG_RUNTIME_DIR"},
		{"XDG_RUNTIME_DIR open to others", "runtime-dir", put("/run/user/1000", dir(0o755, 1000, 1000)), Fail, "mode 0755", "chmod 0700 /run/user/1000"},

		{"cgroup v1", "cgroup", func(h *fakeHost) { h.fstypes["/sys/fs/cgroup"] = tmpfsMagic }, Warn, "cgroup v1: nothing is delegated", "systemd.unified_cgroup_hierarchy=1"},
		{"cgroup hybrid", "cgroup", func(h *fakeHost) {
			h.fstypes["/sys/fs/cgroup"], h.fstypes["/sys/fs/cgroup/unified"] = tmpfsMagic, cgroup2Magic
		}, Warn, "v1 (hybrid)", "update-grub"},
		{"cgroup hybrid on fedora", "cgroup", both(func(h *fakeHost) { h.fstypes["/sys/fs/cgroup"] = tmpfsMagic },
			put("/etc/os-release", file("ID=fedora\n"))), Warn, "cgroup v1", "grubby"},
		{"cgroup v2 not delegated", "cgroup", both(put(cgroupDir, dir(0o755, 0, 0)), put(cgroupDir+"/cgroup.procs", fakeFile{mode: 0o644})),
			Warn, "not delegated to alice", "systemd-run --user --scope -p Delegate=yes"},
		{"cgroup.procs not delegated", "cgroup", put(cgroupDir+"/cgroup.procs", fakeFile{mode: 0o644}), Warn, "not delegated", "Delegate=yes"},
		{"no cgroup fs", "cgroup", func(h *fakeHost) { delete(h.fstypes, "/sys/fs/cgroup") }, Warn, "cannot tell the cgroup version", "mount"},
		{"not a cgroup fs", "cgroup", func(h *fakeHost) { h.fstypes["/sys/fs/cgroup"] = 0xef53 }, Warn, "not a cgroup filesystem", "mount"},
		{"no v2 entry", "cgroup", put("/proc/self/cgroup", file("1:name=systemd:/\n")), Warn, "no v2 entry", "/proc/self/cgroup"},

		{"userns clone off", "userns", put("/proc/sys/kernel/unprivileged_userns_clone", file("0\n")), Warn, "off", "echo 1 | sudo tee /proc/sys/kernel/unprivileged_userns_clone"},
		{"no user namespaces allowed", "userns", put("/proc/sys/user/max_user_namespaces", file("0\n")), Warn, "max_user_namespaces is 0", "echo 15000 | sudo tee /proc/sys/user/max_user_namespaces"},
		{"apparmor restricts userns", "userns", put("/proc/sys/kernel/apparmor_restrict_unprivileged_userns", file("1\n")), Warn, "apparmor", "echo 0 | sudo tee"},
		{"no CONFIG_USER_NS", "userns", del("/proc/self/ns/user"), Warn, "CONFIG_USER_NS", "CONFIG_USER_NS=y"},

		{"no subuid", "subuid", put("/etc/subuid", file("bob:100000:65536\n")), Warn, "no /etc/subuid entry for alice",
			"sudo usermod --add-subuids 165536-231071 --add-subgids 165536-231071 alice"},
		{"no subuid file", "subuid", del("/etc/subuid", "/etc/subgid"), Warn, "no /etc/subuid entry", "--add-subuids 100000-165535 --add-subgids 100000-165535 alice"},
		{"few subuids", "subuid", put("/etc/subuid", file("alice:100000:1000\n")), Warn, "only 1000 ids", "usermod --add-subuids"},
		{"subuid by uid", "subuid", put("/etc/subuid", file("1000:100000:65536\n")), OK, "65536 ids", ""},
		{"no subgid", "subgid", put("/etc/subgid", file("")), Warn, "no /etc/subgid entry for alice", "--add-subgids 165536-231071 alice"},
		{"few subgids", "subgid", put("/etc/subgid", file("alice:100000:65535\n")), Warn, "only 65535 ids", "usermod"},

		{"selinux permissive", "selinux", put("/sys/fs/selinux/enforce", file("0")), OK, "permissive", ""},
		{"selinux enforcing", "selinux", both(put("/sys/fs/selinux/enforce", file("1")), put("/sys/fs/selinux/booleans/deny_execmem", file("0 0"))), OK, "enforcing", ""},
		{"deny_execmem with kvm", "selinux", both(put("/sys/fs/selinux/enforce", file("1")), put("/sys/fs/selinux/booleans/deny_execmem", file("1 1"))),
			Warn, "deny_execmem on", "setsebool -P deny_execmem 0"},
		{"deny_execmem without kvm", "selinux", both(put("/sys/fs/selinux/enforce", file("1")), put("/sys/fs/selinux/booleans/deny_execmem", file("1 1")), del("/dev/kvm")),
			Fail, "no VM can", "setsebool -P deny_execmem 0"},
		{"selinux unreadable", "selinux", put("/sys/fs/selinux/enforce", fakeFile{data: "1", mode: 0o400}), Warn, "cannot read /sys/fs/selinux/enforce", "getenforce"},

		{"no bridge helper", "bridge-helper", del("/usr/lib/qemu/qemu-bridge-helper"), Warn, "not installed", "apt-get install qemu-system-common"},
		{"bridge helper not setuid", "bridge-helper", put("/usr/lib/qemu/qemu-bridge-helper", fakeFile{mode: 0o755}), Warn, "not setuid root (mode 0755)",
			"sudo chmod u+s /usr/lib/qemu/qemu-bridge-helper"},
		{"bridge helper not root's", "bridge-helper", put("/usr/lib/qemu/qemu-bridge-helper", fakeFile{mode: fs.ModeSetuid | 0o755, uid: 1000}), Warn, "owned by uid 1000",
			"sudo chown root /usr/lib/qemu/qemu-bridge-helper"},
		{"fedora bridge helper", "bridge-helper", both(del("/usr/lib/qemu/qemu-bridge-helper"), put("/usr/libexec/qemu-bridge-helper", fakeFile{mode: 0o755})),
			Warn, "/usr/libexec/qemu-bridge-helper is not setuid", "chmod u+s /usr/libexec/qemu-bridge-helper"},
		{"no bridge.conf", "bridge-helper", del("/etc/qemu/bridge.conf"), Warn, "bridge.conf does not exist", "echo 'allow br0' | sudo tee -a /etc/qemu/bridge.conf"},
		{"empty bridge.conf", "bridge-helper", put("/etc/qemu/bridge.conf", file("# nothing\n")), Warn, "allows no bridge", "allow br0"},
		{"bridge.conf for root only", "bridge-helper", put("/etc/qemu/bridge.conf", fakeFile{data: "allow br0", mode: 0o640, gid: 77}), OK, "readable only by root", ""},

		{"no vhost-net", "vhost-net", del("/dev/vhost-net"), Warn, "does not exist", "sudo modprobe vhost_net"},
		{"vhost-net not in group", "vhost-net", both(func(h *fakeHost) { h.user.Groups = []int{1000} }, put("/etc/group", file("kvm:x:107:\n"))),
			Warn, "not in group kvm", "usermod -aG kvm alice"},
		{"vhost-net 0600", "vhost-net", put("/dev/vhost-net", chardev(0o600, 0, 107)), Warn, "no read-write", "chmod 0660 /dev/vhost-net"},

		{"kernel root-only", "kernel-image", put("/boot/vmlinuz-6.1.0-10-amd64", fakeFile{data: "kernel", mode: 0o600}),
			Warn, "/boot/vmlinuz-6.1.0-10-amd64 (root:root 0600) is not readable by alice", "sudo chmod 0644 /boot/vmlinuz-6.1.0-10-amd64, or pass --kernel PATH"},
		{"no kernel", "kernel-image", del("/boot/vmlinuz-6.1.0-10-amd64"), Warn, "no /boot/vmlinuz-<release>", "--kernel PATH"},
		{"kernel without modules", "kernel-image", del("/lib/modules/6.1.0-10-amd64"), Warn, "matching /lib/modules", "apt-get install linux-image-amd64"},
		{"newest kernel root-only", "kernel-image", both(
			put("/boot/vmlinuz-6.1.0-9-amd64", file("old")), put("/lib/modules/6.1.0-9-amd64", dir(0o755, 0, 0)),
			put("/boot/vmlinuz-6.1.0-11-amd64", fakeFile{mode: 0o600}), put("/lib/modules/6.1.0-11-amd64", dir(0o755, 0, 0))),
			Warn, "vmlinuz-6.1.0-11-amd64", "chmod 0644 /boot/vmlinuz-6.1.0-11-amd64"},

		{"no modules dir", "kernel-modules", del("/lib/modules/6.1.0-10-amd64", "/lib/modules/6.1.0-10-amd64/modules.dep"), Warn, "no /lib/modules/6.1.0-10-amd64",
			"apt-get install linux-image-6.1.0-10-amd64"},
		{"modules root-only", "kernel-modules", put("/lib/modules/6.1.0-10-amd64", dir(0o700, 0, 0)), Warn, "not readable by alice", "chmod -R a+rX /lib/modules/6.1.0-10-amd64"},
		{"modules.dep root-only", "kernel-modules", put("/lib/modules/6.1.0-10-amd64/modules.dep", fakeFile{mode: 0o600}), Warn, "modules.dep is not readable", "chmod -R a+rX"},
		{"no modules.dep", "kernel-modules", del("/lib/modules/6.1.0-10-amd64/modules.dep"), Warn, "no /lib/modules/6.1.0-10-amd64/modules.dep", "depmod 6.1.0-10-amd64"},
		{"no uname, no kernel", "kernel-modules", both(func(h *fakeHost) { h.release = "" }, del("/boot/vmlinuz-6.1.0-10-amd64")), Warn, "cannot read the kernel release", "uname -r"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := healthy()
			tt.host(h)
			r := find(t, Run(h), tt.check)
			if r.Status != tt.status {
				t.Errorf("status %q, want %q: %+v", r.Status, tt.status, r)
			}
			if !strings.Contains(r.Detail, tt.detail) {
				t.Errorf("detail %q does not say %q", r.Detail, tt.detail)
			}
			if strings.Contains(r.Detail, "\n") {
				t.Errorf("detail is more than one line: %q", r.Detail)
			}
			if tt.status == OK {
				if r.Fix != "" {
					t.Errorf("an ok check has a fix: %q", r.Fix)
				}
				return
			}
			if r.Fix == "" || !strings.Contains(r.Fix, tt.fix) {
				t.Errorf("fix %q does not say %q", r.Fix, tt.fix)
			}
		})
	}
}

func TestCanRunVMs(t *testing.T) {
	tests := []struct {
		name string
		host func(*fakeHost)
		want bool
	}{
		{"healthy", func(*fakeHost) {}, true},
		// TCG still runs VMs: a missing KVM only slows them down.
		{"no kvm", func(h *fakeHost) { delete(h.files, "/dev/kvm") }, true},
		{"no passt, no qemu-img, no bridge helper", func(h *fakeHost) {
			delete(h.paths, "passt")
			delete(h.paths, "qemu-img")
			delete(h.files, "/usr/lib/qemu/qemu-bridge-helper")
		}, true},
		{"no qemu", func(h *fakeHost) { delete(h.paths, "qemu-system-x86_64") }, false},
		// Root runs system mode: each VMM gets a leased identity.
		{"root", func(h *fakeHost) { h.user = User{UID: 0, Name: "root"} }, true},
		{"unusable runtime dir", func(h *fakeHost) { h.env["XDG_RUNTIME_DIR"] = "/nonexistent" }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := healthy()
			tt.host(h)
			if got := CanRunVMs(Run(h)); got != tt.want {
				t.Errorf("CanRunVMs = %v, want %v: %+v", got, tt.want, Run(h))
			}
		})
	}
}

// Every result, whatever the host, has a detail, and a fix exactly when
// it is not ok.
func TestEveryProblemHasAFix(t *testing.T) {
	h := healthy()
	h.files = map[string]fakeFile{}
	h.paths = map[string]string{}
	h.env = map[string]string{}
	h.fstypes = map[string]int64{}
	h.release = ""
	for _, r := range Run(h) {
		if r.Detail == "" {
			t.Errorf("%s: empty detail", r.Check)
		}
		if (r.Status == OK) != (r.Fix == "") {
			t.Errorf("%s: status %s with fix %q", r.Check, r.Status, r.Fix)
		}
	}
}

func TestResultJSON(t *testing.T) {
	b, err := json.Marshal(Result{Check: "kvm", Status: OK, Detail: "d"})
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"check":"kvm","status":"ok","detail":"d","fix":""}`; string(b) != want {
		t.Errorf("got %s, want %s", b, want)
	}
}

func TestCompareVersions(t *testing.T) {
	tests := []struct {
		a, b string
		want int
	}{
		{"6.1.0-10-amd64", "6.1.0-9-amd64", 1},
		{"7.2.22", "7.2", 1},
		{"6.2.0", "7.2", -1},
		{"7.2", "7.2", 0},
		{"5.10.0-rc1", "5.10.0-rc2", -1},
	}
	for _, tt := range tests {
		if got := compareVersions(tt.a, tt.b); got != tt.want {
			t.Errorf("compareVersions(%q, %q) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
	}
}

func TestRootIsSystemMode(t *testing.T) {
	h := healthy()
	h.user = User{UID: 0, Name: "root"}
	for _, r := range Run(h) {
		if r.Check == "user" && (r.Status != OK || !strings.Contains(r.Detail, "system mode")) {
			t.Errorf("user check as root = %+v, want ok naming system mode", r)
		}
	}
}
