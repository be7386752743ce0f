// Package preflight is `hutch check`: it looks at the host the way hutch
// will use it and says, for each thing it needs, whether it works, why not,
// and the exact command that fixes it.
package preflight

import (
	"errors"
	"strconv"
	"strings"
)

// The statuses of a check. Fail is kept for what makes VMs impossible;
// anything hutch can work around (TCG for KVM, slirp for passt) warns.
const (
	OK   = "ok"
	Warn = "warn"
	Fail = "fail"
)

// Result is one check's verdict. Detail is one line; Fix is a command (or
// the one thing to do) and is empty when Status is OK.
type Result struct {
	Check  string `json:"check"`
	Status string `json:"status"`
	Detail string `json:"detail"`
	Fix    string `json:"fix"`
}

// Check looks at one thing.
type Check func(Host) Result

// Checks are every check, in the order they are reported: who is asking,
// what VMs need, then what only some features need.
var Checks = []Check{
	checkUser,
	checkKernelVersion,
	checkKVM,
	checkAccel,
	checkKVMGroup,
	checkQEMU,
	checkQEMUImg,
	checkPasst,
	checkRuntimeDir,
	checkCgroup,
	checkUserns,
	checkSubuid,
	checkSubgid,
	checkSELinux,
	checkBridgeHelper,
	checkVhostNet,
	checkKernelImage,
	checkKernelModules,
}

// Run runs every check against h.
func Run(h Host) []Result {
	rs := make([]Result, 0, len(Checks))
	for _, c := range Checks {
		rs = append(rs, c(h))
	}
	return rs
}

// CanRunVMs reports whether VMs can run at all: no check failed.
func CanRunVMs(rs []Result) bool {
	for _, r := range rs {
		if r.Status == Fail {
			return false
		}
	}
	return true
}

func ok(check, detail string) Result { return Result{Check: check, Status: OK, Detail: detail} }

func warn(check, detail, fix string) Result {
	return Result{Check: check, Status: Warn, Detail: detail, Fix: fix}
}

func fail(check, detail, fix string) Result {
	return Result{Check: check, Status: Fail, Detail: detail, Fix: fix}
}

// who is the user the checks are for. Without one (which the real host
// never lacks) fixes name the user by a command the shell expands.
func who(h Host) User {
	u, err := h.User()
	if err != nil || u.Name == "" {
		u.Name = "$(id -un)"
	}
	return u
}

// dbEntry is one line of /etc/passwd or /etc/group.
type dbEntry struct {
	name    string
	id      int
	members []string // group members; empty for passwd
}

// readDB parses an /etc/passwd-style file: name:x:id:... with group
// members in the fourth field.
func readDB(h Host, path string) []dbEntry {
	b, err := h.ReadFile(path)
	if err != nil {
		return nil
	}
	var es []dbEntry
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Split(line, ":")
		if len(f) < 3 || strings.HasPrefix(f[0], "#") {
			continue
		}
		id, err := strconv.Atoi(f[2])
		if err != nil {
			continue
		}
		e := dbEntry{name: f[0], id: id}
		if strings.HasSuffix(path, "group") && len(f) >= 4 && f[3] != "" {
			e.members = strings.Split(f[3], ",")
		}
		es = append(es, e)
	}
	return es
}

func groupByName(h Host, name string) (dbEntry, bool) {
	for _, e := range readDB(h, "/etc/group") {
		if e.name == name {
			return e, true
		}
	}
	return dbEntry{}, false
}

// nameOf names a uid or gid from the passwd or group file, or gives the
// number.
func nameOf(h Host, db string, id int) string {
	for _, e := range readDB(h, db) {
		if e.id == id {
			return e.name
		}
	}
	return strconv.Itoa(id)
}

// owner is "user:group" of f, by name where the host has one.
func owner(h Host, f File) string {
	return nameOf(h, "/etc/passwd", f.UID) + ":" + nameOf(h, "/etc/group", f.GID)
}

// install is the command that installs a package with the host's own
// package manager: dnf on the Fedora family, apt-get otherwise (Debian's
// names being the ones hutch is tested with).
func install(h Host, deb, rpm string) string {
	if fedoraFamily(h) {
		return "sudo dnf install " + rpm
	}
	return "sudo apt-get install " + deb
}

// fedoraFamily reports whether /etc/os-release names Fedora or a
// relative of it.
func fedoraFamily(h Host) bool {
	b, _ := h.ReadFile("/etc/os-release")
	for _, line := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(line, "=")
		if k != "ID" && k != "ID_LIKE" {
			continue
		}
		for _, id := range strings.Fields(strings.Trim(v, `"'`)) {
			if id == "fedora" || id == "rhel" || id == "centos" {
				return true
			}
		}
	}
	return false
}

// compareVersions orders version strings as "sort -V" does in the common
// cases: runs of digits compare as numbers, anything else as text.
func compareVersions(a, b string) int {
	for a != "" && b != "" {
		var ca, cb string
		ca, a = versionChunk(a)
		cb, b = versionChunk(b)
		na, errA := strconv.Atoi(ca)
		nb, errB := strconv.Atoi(cb)
		switch {
		case errA == nil && errB == nil && na != nb:
			if na < nb {
				return -1
			}
			return 1
		case (errA != nil || errB != nil) && ca != cb:
			return strings.Compare(ca, cb)
		}
	}
	return strings.Compare(a, b) // the one with text left over is newer
}

func versionChunk(s string) (chunk, rest string) {
	digit := func(c byte) bool { return c >= '0' && c <= '9' }
	d := digit(s[0])
	i := 1
	for i < len(s) && digit(s[i]) == d {
		i++
	}
	return s[:i], s[i:]
}

// cause is the errno behind a path error, which says enough once the
// detail has named the path.
func cause(err error) error {
	if e := errors.Unwrap(err); e != nil {
		return e
	}
	return err
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	return line
}
