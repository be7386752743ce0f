package preflight

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/hutch-vm/hutch/internal/qemu"
)

// Host paths the checks read. The Host decides what is behind them.
const (
	kvmDevice      = "/dev/kvm"
	vhostNetDevice = "/dev/vhost-net"
	cgroupRoot     = "/sys/fs/cgroup"
	selinuxEnforce = "/sys/fs/selinux/enforce"
	denyExecmem    = "/sys/fs/selinux/booleans/deny_execmem"
	bridgeConf     = "/etc/qemu/bridge.conf"
	bootDir        = "/boot"
	modulesRoot    = "/lib/modules"
)

// The filesystem magics of statfs(2) that tell cgroup versions apart.
const (
	cgroup2Magic = 0x63677270
	tmpfsMagic   = 0x01021994
)

// minKernel is the oldest host kernel hutch supports.
var minKernel = [2]int{4, 14}

// passtQEMU is the first QEMU with -netdev stream, which hutch connects
// passt through.
const passtQEMU = "7.2"

// subidCount is how many subordinate ids rootless Podman maps.
const subidCount = 65536

func checkUser(h Host) Result {
	const name = "user"
	u, err := h.User()
	if err != nil {
		return fail(name, fmt.Sprintf("cannot tell who this process is: %v", err), "run hutch check from an ordinary login shell")
	}
	if u.UID == 0 {
		return ok(name, "root: system mode, each VMM runs as an identity leased for it (uid/gid from /etc/hutch/hutch.toml [leases])")
	}
	return ok(name, fmt.Sprintf("%s (uid %d)", u.Name, u.UID))
}

func checkKernelVersion(h Host) Result {
	const name = "kernel-version"
	rel, err := h.KernelRelease()
	if err != nil {
		return warn(name, fmt.Sprintf("cannot read the kernel release: %v", err), "uname -r")
	}
	var v [2]int
	parts := strings.SplitN(rel, ".", 3)
	if len(parts) < 2 {
		return warn(name, fmt.Sprintf("cannot parse kernel release %q", rel), "uname -r")
	}
	for i := range v {
		n, err := strconv.Atoi(strings.TrimRightFunc(parts[i], func(r rune) bool { return r < '0' || r > '9' }))
		if err != nil {
			return warn(name, fmt.Sprintf("cannot parse kernel release %q", rel), "uname -r")
		}
		v[i] = n
	}
	if v[0] < minKernel[0] || v[0] == minKernel[0] && v[1] < minKernel[1] {
		return fail(name, fmt.Sprintf("Linux %s is older than %d.%d, the oldest hutch supports", rel, minKernel[0], minKernel[1]),
			install(h, "linux-image-amd64", "kernel")+" && sudo reboot")
	}
	return ok(name, fmt.Sprintf("Linux %s (%d.%d or newer needed)", rel, minKernel[0], minKernel[1]))
}

// checkAccel is the decision every VM start makes: KVM only when it runs
// a guest with hutch's CPU baseline.
func checkAccel(h Host) Result {
	const name = "accel"
	p := h.ProbeKVM(kvmDevice)
	switch {
	case p.Usable:
		return ok(name, "KVM runs a test guest and offers the CPU baseline (x86-64-v2): VMs use KVM")
	case p.Nested:
		return warn(name, p.Problem()+"; VMs run under TCG, much slower",
			"nothing to do here (hutch picks TCG by itself); for KVM, give this machine nested virtualisation with the CPU's features on its host (e.g. QEMU -cpu host)")
	}
	return warn(name, p.Problem()+"; VMs run under TCG, much slower", "see the kvm row")
}

func checkKVM(h Host) Result {
	const name = "kvm"
	const tcg = "VMs run under TCG, much slower"
	f, err := h.Stat(kvmDevice)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return warn(name, kvmDevice+" does not exist (no virtualisation extensions, no kvm module, or a container without the device); "+tcg, enableKVM(h))
	case err != nil:
		return warn(name, fmt.Sprintf("cannot stat %s: %v; %s", kvmDevice, err, tcg), "ls -l "+kvmDevice)
	case f.Mode&fs.ModeCharDevice == 0:
		return warn(name, kvmDevice+" is not a character device; "+tcg,
			"sudo rm "+kvmDevice+" && sudo mknod -m 0660 "+kvmDevice+" c 10 232 && sudo chgrp kvm "+kvmDevice)
	}
	desc := fmt.Sprintf("%s %s %04o", kvmDevice, owner(h, f), f.Mode.Perm())
	openErr := h.OpenRW(kvmDevice)
	if openErr == nil {
		return ok(name, desc+", opens read-write (see accel for whether it runs guests)")
	}
	why, fix := deviceProblem(h, who(h), kvmDevice, f, openErr)
	return warn(name, desc+": "+why+"; "+tcg, fix)
}

// enableKVM is the fix for a missing /dev/kvm: make the node when the
// module is loaded (a container without it, a host without devtmpfs),
// load the module the CPU wants, or turn virtualisation on below the
// kernel.
func enableKVM(h Host) string {
	for _, m := range []string{"kvm_intel", "kvm_amd"} {
		if _, err := h.Stat("/sys/module/" + m); err == nil {
			return "sudo mknod -m 0660 " + kvmDevice + " c 10 232 && sudo chgrp kvm " + kvmDevice +
				" (in a container: pass the device in, e.g. podman run --device " + kvmDevice + ")"
		}
	}
	b, _ := h.ReadFile("/proc/cpuinfo")
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, "flags") {
			continue
		}
		flags := strings.Fields(line)
		switch {
		case slices.Contains(flags, "vmx"):
			return "sudo modprobe kvm_intel"
		case slices.Contains(flags, "svm"):
			return "sudo modprobe kvm_amd"
		}
		break
	}
	return "enable VT-x/AMD-V in the firmware, or nested virtualisation in the hypervisor running this machine"
}

// deviceProblem says why this process cannot open the device at path
// read-write although it exists, and the fix.
func deviceProblem(h Host, u User, path string, f File, openErr error) (why, fix string) {
	perm := f.Mode.Perm()
	group := nameOf(h, "/etc/group", f.GID)
	inGroup := slices.Contains(u.Groups, f.GID)
	switch {
	case perm&0o006 == 0o006, f.UID == u.UID && perm&0o600 == 0o600, inGroup && perm&0o060 == 0o060:
		return fmt.Sprintf("the mode allows it but the open fails (%v): a device cgroup or security policy refuses it", cause(openErr)),
			"run hutch where the device is passed in (e.g. podman run --device " + path + ")"
	case f.GID == 0 || perm&0o060 != 0o060:
		return fmt.Sprintf("group %s has no read-write access", group),
			"sudo chgrp kvm " + path + " && sudo chmod 0660 " + path
	}
	listed := u.GID == f.GID
	if g, found := groupByName(h, group); found {
		listed = listed || slices.Contains(g.members, u.Name)
	}
	if listed {
		return fmt.Sprintf("%s is in group %s in /etc/group but not in this login's groups", u.Name, group),
			"log out and back in (or run: newgrp " + group + ")"
	}
	return fmt.Sprintf("%s is not in group %s", u.Name, group),
		"sudo usermod -aG " + group + " " + u.Name + " && newgrp " + group
}

func checkKVMGroup(h Host) Result {
	const name = "kvm-group"
	g, found := groupByName(h, "kvm")
	dev, devErr := h.Stat(kvmDevice)
	switch {
	case !found && devErr == nil:
		return warn(name, fmt.Sprintf("no kvm group in /etc/group; %s belongs to gid %d", kvmDevice, dev.GID),
			"sudo groupadd --system kvm && sudo chgrp kvm "+kvmDevice)
	case !found:
		return warn(name, "no kvm group in /etc/group (VMs started by root will need one for "+kvmDevice+")",
			"sudo groupadd --system kvm")
	case devErr == nil && dev.GID != g.id:
		return warn(name, fmt.Sprintf("%s belongs to gid %d, not kvm (gid %d)", kvmDevice, dev.GID, g.id),
			"sudo chgrp kvm "+kvmDevice)
	}
	return ok(name, fmt.Sprintf("kvm is gid %d; it must be the same on every node of a cluster", g.id))
}

// qemuVersion is the version QEMU prints first: "QEMU emulator version
// 7.2.22 (Debian ...)" or "qemu-img version 7.2.22 ...".
func qemuVersion(out string) string {
	f := strings.Fields(firstLine(out))
	if i := slices.Index(f, "version"); i >= 0 && i+1 < len(f) {
		return f[i+1]
	}
	return ""
}

func checkQEMU(h Host) Result {
	const name = "qemu"
	pkg := install(h, "qemu-system-x86", "qemu-system-x86")
	path, err := h.LookPath(qemu.Binary)
	if err != nil {
		return fail(name, qemu.Binary+" not found on PATH", pkg)
	}
	out, err := h.Output(path, "--version")
	if err != nil {
		return fail(name, fmt.Sprintf("%s does not run: %v", path, err), strings.Replace(pkg, " install ", " install --reinstall ", 1))
	}
	v := qemuVersion(out)
	if v == "" {
		return warn(name, fmt.Sprintf("%s printed no version (%q)", path, firstLine(out)), path+" --version")
	}
	if compareVersions(v, passtQEMU) < 0 {
		return warn(name, fmt.Sprintf("QEMU %s at %s: passt networking needs %s or newer", v, path, passtQEMU),
			pkg+" (QEMU "+passtQEMU+" or newer), or run VMs with --network slirp")
	}
	return ok(name, fmt.Sprintf("QEMU %s at %s", v, path))
}

func checkQEMUImg(h Host) Result {
	const name = "qemu-img"
	path, err := h.LookPath("qemu-img")
	if err != nil {
		return warn(name, "qemu-img not found on PATH: IMAGE disks cannot be used (--kernel boots still work)",
			install(h, "qemu-utils", "qemu-img"))
	}
	out, err := h.Output(path, "--version")
	if err != nil {
		return warn(name, fmt.Sprintf("%s does not run: %v", path, err),
			strings.Replace(install(h, "qemu-utils", "qemu-img"), " install ", " install --reinstall ", 1))
	}
	return ok(name, fmt.Sprintf("qemu-img %s at %s", qemuVersion(out), path))
}

func checkPasst(h Host) Result {
	const name = "passt"
	path, err := h.LookPath("passt")
	if err != nil {
		return warn(name, "passt not found on PATH: VMs use QEMU's slirp (slower, no IPv6 port forwards)",
			install(h, "passt", "passt"))
	}
	return ok(name, "passt at "+path)
}

func checkRuntimeDir(h Host) Result {
	const name = "runtime-dir"
	u := who(h)
	if u.UID == 0 {
		return ok(name, "root keeps VM sockets in /run/hutch (system mode); XDG_RUNTIME_DIR is not used")
	}
	dir := h.Getenv("XDG_RUNTIME_DIR")
	if dir == "" {
		return warn(name, fmt.Sprintf("XDG_RUNTIME_DIR is unset: hutch keeps its sockets in /tmp/hutch-%d", u.UID),
			runtimeDirFix(h, u, true))
	}
	if !filepath.IsAbs(dir) {
		return fail(name, fmt.Sprintf("XDG_RUNTIME_DIR=%s is not an absolute path", dir), runtimeDirFix(h, u, false))
	}
	f, err := h.Lstat(dir)
	switch {
	case err != nil:
		return fail(name, fmt.Sprintf("XDG_RUNTIME_DIR=%s: %v", dir, cause(err)), runtimeDirFix(h, u, false))
	case !f.Mode.IsDir():
		return fail(name, fmt.Sprintf("XDG_RUNTIME_DIR=%s is not a directory", dir), runtimeDirFix(h, u, false))
	case f.UID != u.UID:
		return fail(name, fmt.Sprintf("XDG_RUNTIME_DIR=%s is owned by uid %d, not %s", dir, f.UID, u.Name), runtimeDirFix(h, u, false))
	case f.Mode.Perm() != 0o700:
		return fail(name, fmt.Sprintf("XDG_RUNTIME_DIR=%s has mode %04o; it must be 0700 (yours alone)", dir, f.Mode.Perm()), "chmod 0700 "+dir)
	}
	return ok(name, fmt.Sprintf("XDG_RUNTIME_DIR=%s, %s's, mode 0700", dir, u.Name))
}

// runtimeDirFix points XDG_RUNTIME_DIR at the user's systemd runtime
// directory when it is usable; otherwise it gets one made (unset) or
// falls back to hutch's private dir in /tmp.
func runtimeDirFix(h Host, u User, unset bool) string {
	run := "/run/user/" + strconv.Itoa(u.UID)
	if f, err := h.Lstat(run); err == nil && f.Mode.IsDir() && f.UID == u.UID && f.Mode.Perm() == 0o700 {
		return "export XDG_RUNTIME_DIR=" + run
	}
	if unset {
		return "sudo loginctl enable-linger " + u.Name + " && export XDG_RUNTIME_DIR=" + run
	}
	return "unset XDG_RUNTIME_DIR"
}

func checkCgroup(h Host) Result {
	const name = "cgroup"
	const noLimits = "VMs run without per-VM cgroup limits"
	fix := "sudo sed -i 's/^GRUB_CMDLINE_LINUX=\"/&systemd.unified_cgroup_hierarchy=1 /' /etc/default/grub && sudo update-grub && sudo reboot"
	if fedoraFamily(h) {
		fix = "sudo grubby --update-kernel=ALL --args=systemd.unified_cgroup_hierarchy=1 && sudo reboot"
	}
	magic, err := h.FSType(cgroupRoot)
	switch {
	case err != nil:
		return warn(name, fmt.Sprintf("cannot tell the cgroup version: %v; %s", err, noLimits), "mount | grep cgroup")
	case magic == tmpfsMagic:
		version := "v1"
		if m, err := h.FSType(filepath.Join(cgroupRoot, "unified")); err == nil && m == cgroup2Magic {
			version = "v1 (hybrid)"
		}
		return warn(name, "cgroup "+version+": nothing is delegated to unprivileged users; "+noLimits, fix)
	case magic != cgroup2Magic:
		return warn(name, fmt.Sprintf("%s is not a cgroup filesystem (magic %#x); %s", cgroupRoot, magic, noLimits), "mount | grep cgroup")
	}
	b, err := h.ReadFile("/proc/self/cgroup")
	if err != nil {
		return warn(name, fmt.Sprintf("cgroup v2, but this process's cgroup is unknown: %v; %s", err, noLimits), "cat /proc/self/cgroup")
	}
	var own string
	for _, line := range strings.Split(string(b), "\n") {
		if p, found := strings.CutPrefix(line, "0::"); found {
			own = p
		}
	}
	if own == "" {
		return warn(name, "cgroup v2, but /proc/self/cgroup has no v2 entry; "+noLimits, "cat /proc/self/cgroup")
	}
	dir := filepath.Join(cgroupRoot, own)
	// Delegation is ownership of the directory (to make a cgroup per VM)
	// and of cgroup.procs (to move processes into it).
	if h.Access(dir, WriteOK) == nil && h.Access(filepath.Join(dir, "cgroup.procs"), WriteOK) == nil {
		return ok(name, "cgroup v2; "+own+" is delegated to "+who(h).Name)
	}
	return warn(name, fmt.Sprintf("cgroup v2; this process's cgroup %s is not delegated to %s: %s", own, who(h).Name, noLimits),
		"systemd-run --user --scope -p Delegate=yes hutch run ...")
}

func checkUserns(h Host) Result {
	const name = "userns"
	const need = "rootless Podman with hutch-runtime needs them (session VMs do not)"
	if _, err := h.Stat("/proc/self/ns/user"); err != nil {
		return warn(name, "this kernel has no user namespaces (CONFIG_USER_NS); "+need,
			"boot a kernel built with CONFIG_USER_NS=y: "+install(h, "linux-image-amd64", "kernel"))
	}
	knobs := []struct{ path, off, fix string }{
		{"/proc/sys/kernel/unprivileged_userns_clone", "0", "1"},
		{"/proc/sys/user/max_user_namespaces", "0", "15000"},
		{"/proc/sys/kernel/apparmor_restrict_unprivileged_userns", "1", "0"},
	}
	for _, k := range knobs {
		b, err := h.ReadFile(k.path)
		if err == nil && strings.TrimSpace(string(b)) == k.off {
			return warn(name, fmt.Sprintf("unprivileged user namespaces are off (%s is %s); %s", k.path, k.off, need),
				"echo "+k.fix+" | sudo tee "+k.path)
		}
	}
	detail := "unprivileged user namespaces are enabled"
	if b, err := h.ReadFile("/proc/sys/user/max_user_namespaces"); err == nil {
		detail += " (max_user_namespaces " + strings.TrimSpace(string(b)) + ")"
	}
	return ok(name, detail)
}

func checkSubuid(h Host) Result { return checkSubids(h, "subuid") }
func checkSubgid(h Host) Result { return checkSubids(h, "subgid") }

// checkSubids looks for the user's range in /etc/subuid or /etc/subgid.
// The fix adds both, from the first id past every range already given out.
func checkSubids(h Host, kind string) Result {
	u := who(h)
	path := "/etc/" + kind
	start := 100000
	for _, k := range []string{"subuid", "subgid"} {
		for _, r := range subidRanges(h, "/etc/"+k) {
			start = max(start, r.start+r.count)
		}
	}
	fix := fmt.Sprintf("sudo usermod --add-subuids %d-%d --add-subgids %d-%d %s",
		start, start+subidCount-1, start, start+subidCount-1, u.Name)
	total, first := 0, -1
	for _, r := range subidRanges(h, path) {
		if r.owner == u.Name || r.owner == strconv.Itoa(u.UID) {
			total += r.count
			if first < 0 {
				first = r.start
			}
		}
	}
	switch {
	case total == 0:
		return warn(kind, fmt.Sprintf("no %s entry for %s: rootless Podman needs one", path, u.Name), fix)
	case total < subidCount:
		return warn(kind, fmt.Sprintf("%s has only %d ids in %s: rootless Podman needs %d", u.Name, total, path, subidCount), fix)
	}
	return ok(kind, fmt.Sprintf("%s has %d ids from %d in %s", u.Name, total, first, path))
}

type subidRange struct {
	owner        string
	start, count int
}

func subidRanges(h Host, path string) []subidRange {
	b, err := h.ReadFile(path)
	if err != nil {
		return nil
	}
	var rs []subidRange
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Split(strings.TrimSpace(line), ":")
		if len(f) != 3 {
			continue
		}
		start, err1 := strconv.Atoi(f[1])
		count, err2 := strconv.Atoi(f[2])
		if err1 == nil && err2 == nil && count > 0 {
			rs = append(rs, subidRange{f[0], start, count})
		}
	}
	return rs
}

func checkSELinux(h Host) Result {
	const name = "selinux"
	b, err := h.ReadFile(selinuxEnforce)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return ok(name, "disabled")
	case err != nil:
		return warn(name, fmt.Sprintf("cannot read %s: %v", selinuxEnforce, err), "getenforce")
	case strings.TrimSpace(string(b)) != "1":
		return ok(name, "permissive")
	}
	// TCG generates code at run time; with deny_execmem the kernel
	// refuses QEMU the executable memory that needs.
	if b, err := h.ReadFile(denyExecmem); err == nil && strings.HasPrefix(strings.TrimSpace(string(b)), "1") {
		detail := "enforcing with deny_execmem on: TCG cannot run"
		if h.OpenRW(kvmDevice) != nil {
			return fail(name, detail+", and KVM is not usable, so no VM can", "sudo setsebool -P deny_execmem 0")
		}
		return warn(name, detail+" (KVM works)", "sudo setsebool -P deny_execmem 0")
	}
	return ok(name, "enforcing; deny_execmem is off")
}

// bridgeHelpers are where distributions install qemu-bridge-helper.
var bridgeHelpers = []string{"/usr/lib/qemu/qemu-bridge-helper", "/usr/libexec/qemu-bridge-helper", "/usr/lib/qemu-bridge-helper"}

func checkBridgeHelper(h Host) Result {
	const name = "bridge-helper"
	const only = "--network bridge=BR cannot be used"
	var path string
	var f File
	for _, p := range bridgeHelpers {
		if st, err := h.Stat(p); err == nil {
			path, f = p, st
			break
		}
	}
	switch {
	case path == "":
		return warn(name, "qemu-bridge-helper is not installed: "+only, install(h, "qemu-system-common", "qemu-common"))
	case f.UID != 0:
		return warn(name, fmt.Sprintf("%s is owned by uid %d, not root: %s", path, f.UID, only),
			"sudo chown root "+path+" && sudo chmod u+s "+path)
	case f.Mode&fs.ModeSetuid == 0:
		return warn(name, fmt.Sprintf("%s is not setuid root (mode %04o): %s", path, f.Mode.Perm(), only),
			"sudo chmod u+s "+path)
	}
	addBr0 := "sudo mkdir -p /etc/qemu && echo 'allow br0' | sudo tee -a " + bridgeConf
	b, err := h.ReadFile(bridgeConf)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return warn(name, fmt.Sprintf("%s is setuid root but %s does not exist, so it allows no bridge", path, bridgeConf), addBr0)
	case errors.Is(err, fs.ErrPermission):
		// The helper reads it as root; a file only root reads is normal.
		return ok(name, fmt.Sprintf("%s is setuid root; %s exists (readable only by root)", path, bridgeConf))
	case err != nil:
		return warn(name, fmt.Sprintf("cannot read %s: %v", bridgeConf, err), "sudo cat "+bridgeConf)
	}
	var allowed []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && (f[0] == "allow" || f[0] == "include") {
			allowed = append(allowed, f[0]+" "+f[1])
		}
	}
	if len(allowed) == 0 {
		return warn(name, fmt.Sprintf("%s is setuid root but %s allows no bridge", path, bridgeConf), addBr0)
	}
	return ok(name, fmt.Sprintf("%s is setuid root; %s: %s", path, bridgeConf, strings.Join(allowed, ", ")))
}

func checkVhostNet(h Host) Result {
	const name = "vhost-net"
	const slower = "networking runs in QEMU's userspace virtio (slower; not needed)"
	f, err := h.Stat(vhostNetDevice)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return warn(name, vhostNetDevice+" does not exist: "+slower, "sudo modprobe vhost_net")
	case err != nil:
		return warn(name, fmt.Sprintf("cannot stat %s: %v: %s", vhostNetDevice, err, slower), "ls -l "+vhostNetDevice)
	}
	desc := fmt.Sprintf("%s %s %04o", vhostNetDevice, owner(h, f), f.Mode.Perm())
	openErr := h.OpenRW(vhostNetDevice)
	if openErr == nil {
		return ok(name, desc+", opens read-write")
	}
	why, fix := deviceProblem(h, who(h), vhostNetDevice, f, openErr)
	return warn(name, desc+": "+why+"; "+slower, fix)
}

// hostKernel is the kernel hutch boots when none is given: the newest
// /boot/vmlinuz-<release> that has /lib/modules/<release>, since the
// guest's initramfs is built from those modules.
func hostKernel(h Host) (path, release string, found bool) {
	names, _ := h.ReadDir(bootDir)
	for _, n := range names {
		rel, isKernel := strings.CutPrefix(n, "vmlinuz-")
		if !isKernel || rel == "" {
			continue
		}
		if f, err := h.Stat(filepath.Join(modulesRoot, rel)); err != nil || !f.Mode.IsDir() {
			continue
		}
		if !found || compareVersions(rel, release) > 0 {
			path, release, found = filepath.Join(bootDir, n), rel, true
		}
	}
	return path, release, found
}

func checkKernelImage(h Host) Result {
	const name = "kernel-image"
	const need = "VMs without IMAGE need --kernel PATH"
	path, _, found := hostKernel(h)
	if !found {
		return warn(name, fmt.Sprintf("no %s/vmlinuz-<release> with a matching %s/<release>: %s", bootDir, modulesRoot, need),
			install(h, "linux-image-amd64", "kernel-core")+", or pass --kernel PATH")
	}
	if err := h.Access(path, ReadOK); err != nil {
		mode := ""
		if f, err := h.Stat(path); err == nil {
			mode = fmt.Sprintf(" (%s %04o)", owner(h, f), f.Mode.Perm())
		}
		return warn(name, fmt.Sprintf("%s%s is not readable by %s: %s", path, mode, who(h).Name, need),
			"sudo chmod 0644 "+path+", or pass --kernel PATH")
	}
	return ok(name, path+" is readable")
}

func checkKernelModules(h Host) Result {
	const name = "kernel-modules"
	_, rel, found := hostKernel(h)
	if !found {
		var err error
		if rel, err = h.KernelRelease(); err != nil {
			return warn(name, fmt.Sprintf("cannot read the kernel release: %v", err), "uname -r")
		}
	}
	dir := filepath.Join(modulesRoot, rel)
	if f, err := h.Stat(dir); err != nil || !f.Mode.IsDir() {
		return warn(name, fmt.Sprintf("no %s: the guest initramfs cannot get modules; VMs without IMAGE need --initrd PATH", dir),
			install(h, "linux-image-"+rel, "kernel-modules-"+rel)+", or pass --initrd PATH")
	}
	if err := h.Access(dir, ReadOK|ExecOK); err != nil {
		return warn(name, fmt.Sprintf("%s is not readable by %s: the guest initramfs cannot get modules", dir, who(h).Name),
			"sudo chmod -R a+rX "+dir)
	}
	dep := filepath.Join(dir, "modules.dep")
	if _, err := h.Stat(dep); err != nil {
		return warn(name, fmt.Sprintf("no %s: the guest initramfs cannot resolve module dependencies", dep), "sudo depmod "+rel)
	}
	if err := h.Access(dep, ReadOK); err != nil {
		return warn(name, fmt.Sprintf("%s is not readable by %s: the guest initramfs cannot get modules", dep, who(h).Name),
			"sudo chmod -R a+rX "+dir)
	}
	return ok(name, dir+" and its modules.dep are readable")
}
