package e2e

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hutch-vm/hutch/internal/accel"
)

// kvmGroup is the gid of the group /dev/kvm belongs to; the test fails
// where there is none, since the rule under test is about such a user.
func kvmGroup(t *testing.T) uint32 {
	g, err := user.LookupGroup("kvm")
	if err != nil {
		t.Fatalf("no kvm group (QEMU's packages make it): %v", err)
	}
	gid, _ := strconv.Atoi(g.Gid)
	return uint32(gid)
}

// The accelerator comes from what KVM can do, not from a device that
// opens: a user in the kvm group, and root's system mode, get what the
// probe says, with one notice naming the cause when it is TCG; an
// explicit kvm where KVM cannot run a guest is refused before anything
// starts, from the flag or from the config file.
func TestAccelChoice(t *testing.T) {
	t.Parallel()
	probe := accel.ProbeDevice(accel.Device)
	t.Logf("this host: %+v", probe)
	u := newUser(t, "hutchtest2")
	u.groups = []uint32{kvmGroup(t)}
	cfgDir := filepath.Join(u.dataDir, "config")
	u.env = append(u.env, "XDG_CONFIG_HOME="+cfgDir)

	port := freePort(t)
	r := u.run("run", "-d", "--name", "auto", "--memory", "256M", "--kernel", guest.Kernel, "--initrd", guest.Initrd,
		"--append", "console=ttyS0", "-p", fmt.Sprintf("127.0.0.1:%d:80", port))
	if r.code != 0 {
		t.Fatalf("run: %v", r)
	}
	want := u.expectedAccel()
	v := u.inspect("auto")
	if v.Accel != want || v.AccelReason == "" {
		t.Errorf("inspect: accel %q (%q), want %q", v.Accel, v.AccelReason, want)
	}
	notices := strings.Count(r.err, "using TCG")
	switch {
	case want == accel.TCG && (notices != 1 || !strings.Contains(r.err, probe.Problem())):
		t.Errorf("TCG fallback: stderr %q, want one notice naming %q", r.err, probe.Problem())
	case want == accel.KVM && r.err != "":
		t.Errorf("KVM run: stderr %q, want nothing", r.err)
	}
	if !probe.Usable && !strings.Contains(v.AccelReason, probe.Why) {
		t.Errorf("accelReason %q does not say why (%q)", v.AccelReason, probe.Why)
	}
	if body := waitPage(t, port); !strings.Contains(body, "hutch test guest") {
		t.Fatalf("page = %q", body)
	}

	// TCG asked for: no probe, no notice.
	if r := u.run("run", "-d", "--name", "soft", "--accel", "tcg", "--memory", "128M", "--kernel", guest.Kernel,
		"--initrd", guest.Initrd, "--append", "console=ttyS0", "--network", "none"); r.code != 0 || r.err != "" {
		t.Errorf("run --accel tcg: %v; want success and a quiet stderr", r)
	} else if v := u.inspect("soft"); v.Accel != accel.TCG {
		t.Errorf("--accel tcg ran %q", v.Accel)
	}

	kvmArgs := []string{"run", "-d", "--name", "hard", "--memory", "128M", "--kernel", guest.Kernel,
		"--initrd", guest.Initrd, "--append", "console=ttyS0", "--network", "none"}
	if probe.Usable {
		if r := u.run(append(kvmArgs, "--accel", "kvm")...); r.code != 0 || u.inspect("hard").Accel != accel.KVM {
			t.Errorf("run --accel kvm on a usable KVM: %v", r)
		}
		return
	}
	before := u.tree()
	r = u.run(append(kvmArgs, "--accel", "kvm")...)
	if r.code != 2 || !strings.Contains(r.err, "--accel kvm: kvm cannot be used: "+probe.Problem()) || strings.Count(strings.TrimSpace(r.err), "\n") != 0 {
		t.Errorf("run --accel kvm where KVM is unusable: %v; want exit 2 and one line naming %q", r, probe.Problem())
	}
	if after := u.tree(); after != before {
		t.Errorf("a refused --accel kvm changed the state:\nbefore %s\nafter  %s", before, after)
	}

	// The config's accel key is the default of both; the refusal names the file.
	cfg := filepath.Join(cfgDir, "hutch", "hutch.toml")
	os.MkdirAll(filepath.Dir(cfg), 0o755)
	if err := os.WriteFile(cfg, []byte("accel = \"kvm\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := u.run(kvmArgs...); r.code != 2 || !strings.Contains(r.err, `accel = "kvm" in `+cfg+": kvm cannot be used") {
		t.Errorf("run with accel = kvm in the config: %v; want exit 2 naming %s", r, cfg)
	}
	os.WriteFile(cfg, []byte("accel = \"tcg\"\n"), 0o644)
	if r := u.run(kvmArgs...); r.code != 0 || r.err != "" || u.inspect("hard").Accel != accel.TCG {
		t.Errorf("run with accel = tcg in the config: %v; want a quiet TCG run", r)
	}
}

// System mode asks the same probe: root's VM runs on what KVM can do, with
// the same notice, and the VMM gets the kvm group only to use KVM.
func TestAccelSystemMode(t *testing.T) {
	probe := accel.ProbeDevice(accel.Device)
	r := rootUser(t)
	b := make([]byte, 3)
	rand.Read(b)
	name := "sysacc-" + hex.EncodeToString(b)
	t.Cleanup(func() { r.run("rm", "-f", name) })
	port := freePort(t)
	res := r.run("run", "-d", "--name", name, "--memory", "256M", "--kernel", guest.Kernel, "--initrd", guest.Initrd,
		"--append", "console=ttyS0", "-p", fmt.Sprintf("127.0.0.1:%d:80", port))
	if res.code != 0 {
		t.Fatalf("run as root: %v", res)
	}
	v := r.inspect(name)
	want := r.expectedAccel()
	if v.Accel != want {
		t.Errorf("system vm accel %q, want %q (%+v)", v.Accel, want, probe)
	}
	if want == accel.TCG && !strings.Contains(res.err, probe.Problem()+"; using TCG") {
		t.Errorf("root's TCG run: stderr %q, want the notice naming %q", res.err, probe.Problem())
	}
	st := procStatus(v.Pid)
	if st == nil {
		t.Fatalf("qemu pid %d is gone", v.Pid)
	}
	if kvm := strconv.Itoa(int(kvmGroup(t))); (st["Groups"] == kvm) != (want == accel.KVM) {
		t.Errorf("VMM Groups %q with accel %s: the kvm group goes with KVM and only with it", st["Groups"], want)
	}
	if body := waitPage(t, port); !strings.Contains(body, "hutch test guest") {
		t.Fatalf("page = %q", body)
	}
}

// fakeQEMU puts a qemu-system-x86_64 that runs script first on u's PATH.
func fakeQEMU(t *testing.T, u *tUser, script string) {
	dir := openDir(t)
	bin := filepath.Join(dir, "qemu-system-x86_64")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n"+script+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	for i, e := range u.env {
		if p, ok := strings.CutPrefix(e, "PATH="); ok {
			u.env[i] = "PATH=" + dir + ":" + p
		}
	}
}

// A QEMU that dies at start, and one that never answers on QMP: run -d
// returns an error within a bound, with QEMU's last line and its log's
// path, and leaves no process.
func TestQEMUFailsAtStart(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name, script, want string
		bound              time.Duration
	}{
		{"dies", `echo "qemu-system-x86_64: -accel kvm: failed to set MSR 0x10a" >&2; exit 1`,
			"qemu exited at start (qemu exited with code 1): qemu-system-x86_64: -accel kvm: failed to set MSR 0x10a; see ", 20 * time.Second},
		{"mute", `echo "qemu-system-x86_64: stuck before QMP" >&2; exec sleep 600`,
			"qemu did not answer on QMP within 45s: qemu-system-x86_64: stuck before QMP; see ", 75 * time.Second},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			u := newUser(t, "hutchtest1")
			fakeQEMU(t, u, c.script)
			start := time.Now()
			done := make(chan result, 1)
			go func() {
				done <- tryHutch(u, "run", "-d", "--name", c.name, "--memory", "128M", "--kernel", guest.Kernel,
					"--initrd", guest.Initrd, "--network", "none", "--accel", "tcg")
			}()
			if c.name == "mute" {
				// While it starts, rm without -f leaves it alone.
				if !waitFor(20*time.Second, func() bool { return tryHutch(u, "inspect", c.name).code == 0 }) {
					t.Fatal("the starting vm never appeared")
				}
				// Before its supervisor records QEMU it is "starting", after
				// that "running": refused either way.
				if r := tryHutch(u, "rm", c.name); r.code != 1 || !strings.Contains(r.err, "is starting") && !strings.Contains(r.err, "is running") {
					t.Errorf("rm of a starting vm: %v; want exit 1 saying it is starting or running", r)
				}
				if r := tryHutch(u, "inspect", c.name); r.code != 0 {
					t.Errorf("rm without -f removed the starting vm: %v", r)
				}
			}
			r := <-done
			took := time.Since(start)
			if r.code != 1 || !strings.Contains(r.err, c.want) || !strings.Contains(r.err, "qemu.log") {
				t.Errorf("run -d with a QEMU that %s: %v; want exit 1 with %q and the log's path", c.name, r, c.want)
			}
			if took > c.bound {
				t.Errorf("run -d took %s, want at most %s", took, c.bound)
			}
			waitNoUserProcs(t, u, 10*time.Second, "after a failed start")
		})
	}
}
