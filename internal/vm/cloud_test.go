package vm

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hutch-vm/hutch/internal/qemu"
	"github.com/hutch-vm/hutch/internal/store"
)

func TestPlanCloud(t *testing.T) {
	dir := t.TempDir()
	e := &Engine{Layout: store.Layout{DataRoot: filepath.Join(dir, "data"), RunRoot: filepath.Join(dir, "run")}}
	ud := filepath.Join(dir, "user-data")
	if err := os.WriteFile(ud, []byte("#cloud-config\nruncmd: [[touch, /x]]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := &Spec{Name: "web", Image: "img", SSH: &SSHAccess{}, CloudInit: ud}
	var fds fdTable
	var cfg qemu.Config
	c, err := e.planCloud(s, &fds, &cfg)
	if err != nil {
		t.Fatal(err)
	}
	if s.SSH.User == "" || s.SSH.HostPort == 0 {
		t.Fatalf("ssh access not resolved: %+v", s.SSH)
	}
	if len(s.Ports) != 1 || s.Ports[0].GuestPort != 22 || s.Ports[0].HostPort != s.SSH.HostPort || s.Ports[0].HostIP != "127.0.0.1" {
		t.Errorf("forwards %+v", s.Ports)
	}
	// The seed is one read-only raw drive, its one fd opened read-only.
	if len(cfg.Drives) != 1 || !cfg.Drives[0].ReadOnly || cfg.Drives[0].Layers[0].Format != "raw" || cfg.Drives[0].Boot {
		t.Errorf("drives %+v", cfg.Drives)
	}
	if len(fds.fds) != 1 || fds.fds[0].Path != e.Layout.VM("web").Seed() || fds.fds[0].Write {
		t.Errorf("fds %+v", fds.fds)
	}
	// Planning again (a generated name was taken) keeps the one forward.
	if _, err := e.planCloud(s, &fdTable{}, &qemu.Config{}); err != nil || len(s.Ports) != 1 {
		t.Errorf("replan: %v, %+v", err, s.Ports)
	}

	seed := filepath.Join(dir, "seed.iso")
	if err := e.writeSeed(*s, "52:54:00:aa:bb:cc", c, seed); err != nil {
		t.Fatal(err)
	}
	iso, _ := os.ReadFile(seed)
	pub, err := os.ReadFile(e.Layout.SSHKey() + ".pub")
	if err != nil {
		t.Fatalf("no key pair made: %v", err)
	}
	for _, want := range [][]byte{bytes.TrimSpace(pub), []byte("name: " + s.SSH.User), []byte("touch"), []byte("52:54:00:aa:bb:cc"), []byte("local-hostname: web")} {
		if !bytes.Contains(iso, want) {
			t.Errorf("seed lacks %q", want)
		}
	}
}

func TestPlanCloudBadUserData(t *testing.T) {
	dir := t.TempDir()
	e := &Engine{Layout: store.Layout{DataRoot: filepath.Join(dir, "data")}}
	for name, data := range map[string]string{
		"bad yaml":       "#cloud-config\nruncmd: [\n",
		"users a string": "#cloud-config\nusers: alice\n",
	} {
		ud := filepath.Join(dir, strings.ReplaceAll(name, " ", "-"))
		os.WriteFile(ud, []byte(data), 0o600)
		s := &Spec{Name: "web", Image: "img", SSH: &SSHAccess{}, CloudInit: ud}
		_, err := e.planCloud(s, &fdTable{}, &qemu.Config{})
		if !IsInput(err) || !strings.HasPrefix(err.Error(), "--cloud-init "+ud+": ") {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := os.Stat(e.Layout.SSHKey()); !os.IsNotExist(err) {
		t.Errorf("bad input made a key pair: %v", err)
	}
}

func TestGuestUser(t *testing.T) {
	u := guestUser()
	if !userRE.MatchString(u) || u == "root" {
		t.Errorf("guestUser() = %q", u)
	}
}
