package vm

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

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
	c, err := e.planCloud(s, nil)
	if err != nil {
		t.Fatal(err)
	}
	if s.SSH.User == "" || s.SSH.HostPort == 0 {
		t.Fatalf("ssh access not resolved: %+v", s.SSH)
	}
	if len(s.Ports) != 1 || s.Ports[0].GuestPort != 22 || s.Ports[0].HostPort != s.SSH.HostPort || s.Ports[0].HostIP != "127.0.0.1" {
		t.Errorf("forwards %+v", s.Ports)
	}

	// Planning again (a generated name was taken) keeps the one forward.
	if _, err := e.planCloud(s, nil); err != nil || len(s.Ports) != 1 {
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
		_, err := e.planCloud(s, nil)
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

// The seed is the last drive, read-only raw, so data disks keep their
// names (vdb, vdc...) whether or not a seed is attached; a blank disk is
// a writable qcow2 in the VM's data dir.
func TestPlanDriveOrder(t *testing.T) {
	dir := t.TempDir()
	e := &Engine{Layout: store.Layout{DataRoot: filepath.Join(dir, "data"), RunRoot: filepath.Join(dir, "run")}}
	img := filepath.Join(dir, "base.raw")
	if err := os.WriteFile(img, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, ssh := range []bool{false, true} {
		s, err := ParseSpec(Options{Name: "web", CPUs: 1, Image: img, SSH: ssh, Disks: []string{"size=1G"}, DiskSize: "2M"})
		if err != nil {
			t.Fatal(err)
		}
		p, err := e.plan(&s)
		if err != nil {
			t.Fatal(err)
		}
		d := p.VMM.Drives
		want := 2
		if ssh {
			want = 3
		}
		if len(d) != want || d[1].ReadOnly || d[1].Layers[0].Format != "qcow2" {
			t.Fatalf("ssh=%v: drives %+v", ssh, d)
		}
		if ssh && (!d[2].ReadOnly || d[2].Layers[0].Format != "raw") {
			t.Errorf("the seed is not the last, read-only raw drive: %+v", d)
		}
		if len(p.Blanks) != 1 || p.Blanks[0].Size != 1<<30 || p.Blanks[0].Path != e.Layout.VM("web").Overlay(1) {
			t.Errorf("blanks %+v", p.Blanks)
		}
		if p.Overlays[0].Size != 2<<20 {
			t.Errorf("root overlay size %d, want the --disk-size 2M", p.Overlays[0].Size)
		}
	}
}
