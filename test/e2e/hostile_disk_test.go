package e2e

import (
	"crypto/rand"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// guestRun types command into the guest's shell through hutch console and
// waits until the output shows want (which the command must print, and
// which should not be what was typed), then detaches.
func guestRun(t *testing.T, u *tUser, name, command, want string, timeout time.Duration) {
	t.Helper()
	master, slave := openPty(t)
	defer master.Close()
	c := u.cmd("console", name)
	c.Stdin, c.Stdout, c.Stderr = slave, slave, slave
	c.SysProcAttr.Setsid = true
	c.SysProcAttr.Setctty = true
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	slave.Close()
	defer func() {
		master.Write([]byte{0x1d})
		done := make(chan error, 1)
		go func() { done <- c.Wait() }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			c.Process.Kill()
			<-done
		}
	}()
	out := &syncBuffer{}
	go io.Copy(out, master)
	if !waitFor(30*time.Second, func() bool {
		master.Write([]byte("echo ready-$((6*7))\r"))
		return waitFor(2*time.Second, func() bool { return strings.Contains(out.String(), "ready-42") })
	}) {
		t.Fatalf("guest shell did not answer; saw:\n%s", tail(out.String(), 2000))
	}
	master.Write([]byte(command + "\r"))
	if !waitFor(timeout, func() bool { return strings.Contains(out.String(), want) }) {
		t.Fatalf("guest did not print %q after %q; saw:\n%s", want, command, tail(out.String(), 2000))
	}
}

// openFDs lists what pid holds open.
func openFDs(pid int) []string {
	dir := "/proc/" + strconv.Itoa(pid) + "/fd"
	ents, _ := os.ReadDir(dir)
	var out []string
	for _, e := range ents {
		if l, err := os.Readlink(filepath.Join(dir, e.Name())); err == nil {
			out = append(out, l)
		}
	}
	return out
}

// A guest owns the bytes of a raw disk it is given, so it can write a qcow2
// header there naming any host file as backing file or external data
// file. The next VM given that disk must open the file alone: its format
// was named (raw is the default and never probed), and a disk that looks
// like qcow2 without a format is refused, as are images whose header names
// json:, protocols or data files. Checked as a user and as root (system
// mode, where the privileged side opens the disks).
func TestHostileDiskHeader(t *testing.T) {
	for _, mode := range []string{"session", "system"} {
		t.Run(mode, func(t *testing.T) {
			var u *tUser
			var secret, victim string
			dir := openDir(t)
			b := make([]byte, 3)
			rand.Read(b)
			suffix := hex.EncodeToString(b)
			if mode == "session" {
				u = newUser(t, "hutchtest1")
				// The user's own secret: readable by the user and so by a
				// VMM that runs as the user, if hutch let a header name it.
				secret, victim = filepath.Join(u.dataDir, "id_ed25519"), filepath.Join(u.dataDir, "bashrc")
			} else {
				u = rootUser(t)
				secret, victim = "/etc/shadow", filepath.Join(dir, "root-victim")
			}
			for _, f := range []string{secret, victim} {
				if f != "/etc/shadow" {
					os.WriteFile(f, []byte("precious\n"), 0o600)
					os.Chown(f, u.uid, u.gid)
				}
			}
			victimBefore, _ := os.ReadFile(victim)
			data := filepath.Join(dir, "data.raw")
			hdrBacking := filepath.Join(dir, "hdr-backing.img")
			hdrData := filepath.Join(dir, "hdr-data.img")
			sh(t, "qemu-img", "create", "-q", "-f", "raw", data, "16M")
			sh(t, "qemu-img", "create", "-q", "-f", "qcow2", "-u", "-F", "raw", "-b", secret, hdrBacking, "16M")
			// The data-file header must name the victim; qemu-img would make
			// the file it names, so it names it before the victim exists.
			tmpVictim := filepath.Join(dir, "victim-name")
			sh(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "data_file="+tmpVictim, hdrData, "16M")
			os.Remove(tmpVictim)
			for _, f := range []string{data, hdrBacking, hdrData} {
				os.Chmod(f, 0o600)
				os.Chown(f, u.uid, u.gid)
			}
			if mode == "system" {
				// A system VMM must never see a root-only file by name.
				os.Chown(data, 0, 0)
			}
			vm := func(n string) string { return "hd" + n + "-" + suffix }
			t.Cleanup(func() { u.run("rm", "-f", vm("1"), vm("2"), vm("3")) })

			base := []string{"--memory", "256M", "--kernel", guest.Kernel, "--initrd", guest.Initrd,
				"--append", "console=ttyS0", "--network", "none"}
			// The hostile guest: copies a header onto its own raw disk.
			for _, hdr := range []string{hdrBacking, hdrData} {
				u.ok(append([]string{"run", "-d", "--name", vm("1"), "--disk", data + ",format=raw", "--disk", hdr + ",format=raw,ro"}, base...)...)
				guestRun(t, u, vm("1"), "dd if=/dev/vdb of=/dev/vda bs=64k count=1 conv=notrunc 2>/dev/null; sync; echo wrote-$((2*3))", "wrote-6", time.Minute)
				u.ok("rm", "-f", vm("1"))
				if r := u.run(append([]string{"run", "-d", "--name", vm("2"), "--disk", data}, base...)...); r.code != 2 ||
					!strings.Contains(r.err, "starts with a qcow2 header but names no format") {
					t.Errorf("a raw disk a guest gave a qcow2 header, without a format: %v; want exit 2", r)
				}
				// Named raw: the VM gets the file and nothing its header names.
				u.ok(append([]string{"run", "-d", "--name", vm("3"), "--disk", data + ",format=raw"}, base...)...)
				v := u.inspect(vm("3"))
				if len(v.Disks) != 1 || len(v.Disks[0].Chain) != 1 || v.Disks[0].Chain[0].Format != "raw" {
					t.Errorf("inspect disks = %+v, want one raw layer", v.Disks)
				}
				for what, pid := range map[string]int{"qemu": v.Pid, "supervisor": v.SupervisorPid} {
					for _, f := range openFDs(pid) {
						if f == secret || f == victim {
							t.Errorf("%s (pid %d) holds %s open", what, pid, f)
						}
					}
				}
				guestRun(t, u, vm("3"), "head -c 4 /dev/vda | od -c | head -1", "Q   F   I", time.Minute)
				u.ok("rm", "-f", vm("3"))
				if after, _ := os.ReadFile(victim); string(after) != string(victimBefore) {
					t.Errorf("%s changed: %q", victim, after)
				}
			}

			// Images whose headers reach beyond themselves are refused in one line.
			jsonImg, nbdImg := filepath.Join(dir, "json.qcow2"), filepath.Join(dir, "nbd.qcow2")
			sh(t, "qemu-img", "create", "-q", "-f", "qcow2", "-u", "-F", "raw", "-b", `json:{"file.filename":"`+secret+`"}`, jsonImg, "16M")
			sh(t, "qemu-img", "create", "-q", "-f", "qcow2", "-u", "-F", "raw", "-b", "nbd://127.0.0.1:10809/x", nbdImg, "16M")
			for _, f := range []string{jsonImg, nbdImg} {
				os.Chmod(f, 0o644)
			}
			for _, c := range []struct{ args []string }{
				{[]string{hdrBacking}},
				{[]string{jsonImg}},
				{[]string{nbdImg}},
				{[]string{"--disk", hdrData + ",format=qcow2,ro"}},
				{[]string{"--disk", jsonImg + ",format=qcow2,ro"}},
				{[]string{"--disk", nbdImg + ",format=qcow2,ro"}},
			} {
				before := u.tree()
				r := u.run(append(append([]string{"run", "-d", "--name", vm("2")}, base...), c.args...)...)
				if r.code != 2 || strings.Count(strings.TrimSpace(r.err), "\n") != 0 {
					t.Errorf("run %v: %v; want exit 2 and one line", c.args, r)
				}
				if mode == "session" && u.tree() != before {
					t.Errorf("run %v changed the state", c.args)
				}
			}
		})
	}
}
