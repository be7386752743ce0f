package cloudinit

import (
	"bytes"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

func TestParseUserData(t *testing.T) {
	for _, tc := range []struct {
		name, in, err string
	}{
		{"config", "#cloud-config\nruncmd:\n  - [touch, /x]\n", ""},
		{"empty config", "#cloud-config\n", ""},
		{"crlf header", "#cloud-config\r\npackages: []\n", ""},
		{"no header", "runcmd: []\n", "must start with a line reading #cloud-config"},
		{"script", "#!/bin/sh\necho hi\n", "must start with a line reading #cloud-config"},
		{"bad yaml", "#cloud-config\nruncmd: [\n", "is not valid YAML"},
		{"tab indent", "#cloud-config\nusers:\n\t- name: a\n", "is not valid YAML"},
		{"list", "#cloud-config\n- a\n- b\n", "is not a YAML mapping"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseUserData([]byte(tc.in))
			switch {
			case tc.err == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
				t.Fatalf("error %v, want one containing %q", err, tc.err)
			case err != nil && strings.Contains(err.Error(), "\n"):
				t.Fatalf("error spans lines: %q", err)
			}
		})
	}
}

var login = Login{User: "alice", PublicKey: "ssh-ed25519 AAAAC3 hutch"}

func TestMergeLoginAddsUser(t *testing.T) {
	doc, err := ParseUserData([]byte("#cloud-config\nruncmd:\n  - [touch, /done]\n"))
	if err != nil {
		t.Fatal(err)
	}
	merged, err := MergeLogin(doc, login)
	if err != nil {
		t.Fatal(err)
	}
	out, err := UserData(merged)
	if err != nil {
		t.Fatal(err)
	}
	var back struct {
		RunCmd [][]string `yaml:"runcmd"`
		Users  []struct {
			Name string   `yaml:"name"`
			Sudo string   `yaml:"sudo"`
			Keys []string `yaml:"ssh_authorized_keys"`
		} `yaml:"users"`
	}
	if !bytes.HasPrefix(out, []byte("#cloud-config\n")) {
		t.Fatalf("no header:\n%s", out)
	}
	if err := yaml.Unmarshal(out, &back); err != nil {
		t.Fatal(err)
	}
	if len(back.RunCmd) != 1 || back.RunCmd[0][1] != "/done" {
		t.Errorf("runcmd lost: %+v", back.RunCmd)
	}
	if len(back.Users) != 1 || back.Users[0].Name != "alice" || back.Users[0].Keys[0] != login.PublicKey || back.Users[0].Sudo == "" {
		t.Errorf("users = %+v", back.Users)
	}
	if _, ok := doc["users"]; ok {
		t.Error("MergeLogin changed its input")
	}
}

func TestMergeLoginKeepsUsers(t *testing.T) {
	doc, err := ParseUserData([]byte("#cloud-config\nusers:\n  - default\n  - name: alice\n    ssh_authorized_keys: [ssh-rsa OLD]\n  - name: bob\n"))
	if err != nil {
		t.Fatal(err)
	}
	merged, err := MergeLogin(doc, login)
	if err != nil {
		t.Fatal(err)
	}
	users := merged["users"].([]any)
	if len(users) != 3 || users[0] != "default" {
		t.Fatalf("users = %v", users)
	}
	keys := users[1].(map[string]any)["ssh_authorized_keys"].([]any)
	if len(keys) != 2 || keys[0] != "ssh-rsa OLD" || keys[1] != login.PublicKey {
		t.Errorf("alice's keys = %v", keys)
	}
	orig := doc["users"].([]any)[1].(map[string]any)["ssh_authorized_keys"].([]any)
	if len(orig) != 1 {
		t.Error("MergeLogin changed its input")
	}
}

func TestMergeLoginBadUsers(t *testing.T) {
	for _, in := range []string{"#cloud-config\nusers: alice\n", "#cloud-config\nusers:\n  - name: alice\n    ssh_authorized_keys: one\n"} {
		doc, err := ParseUserData([]byte(in))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := MergeLogin(doc, login); err == nil {
			t.Errorf("%q: merged", in)
		}
	}
}

func TestNetworkConfigIsDHCP(t *testing.T) {
	var nc struct {
		Version   int `yaml:"version"`
		Ethernets map[string]struct {
			Match struct {
				MAC string `yaml:"macaddress"`
			} `yaml:"match"`
			SetName string `yaml:"set-name"`
			DHCP4   bool   `yaml:"dhcp4"`
		} `yaml:"ethernets"`
	}
	if err := yaml.Unmarshal(NetworkConfig("52:54:00:12:34:56"), &nc); err != nil {
		t.Fatal(err)
	}
	e := nc.Ethernets["eth0"]
	if nc.Version != 2 || len(nc.Ethernets) != 1 || !e.DHCP4 || e.Match.MAC != "52:54:00:12:34:56" || e.SetName != "eth0" {
		t.Errorf("network-config = %+v", nc)
	}
}

// readRoot lists the root directory of an ISO 9660 image as name -> data,
// following the primary volume descriptor as a reader would.
func readRoot(t *testing.T, img []byte) (string, map[string]string) {
	t.Helper()
	pvd := img[16*sector:]
	if pvd[0] != 1 || string(pvd[1:6]) != "CD001" {
		t.Fatal("no primary volume descriptor")
	}
	if got := binary.LittleEndian.Uint32(pvd[80:84]); int(got)*sector != len(img) {
		t.Fatalf("volume space size %d sectors, image %d bytes", got, len(img))
	}
	label := strings.TrimRight(string(pvd[40:72]), " ")
	root := pvd[156:]
	at := binary.LittleEndian.Uint32(root[2:6])
	dir := img[int(at)*sector : int(at+1)*sector]
	files := map[string]string{}
	for off := 0; off < len(dir) && dir[off] != 0; off += int(dir[off]) {
		r := dir[off:]
		id := string(r[33 : 33+int(r[32])])
		if r[25]&2 != 0 {
			continue
		}
		ext, size := binary.LittleEndian.Uint32(r[2:6]), binary.LittleEndian.Uint32(r[10:14])
		if binary.BigEndian.Uint32(r[6:10]) != ext || binary.BigEndian.Uint32(r[14:18]) != size {
			t.Fatalf("%s: both-endian fields disagree", id)
		}
		files[id] = string(img[int(ext)*sector : int(ext)*sector+int(size)])
	}
	return label, files
}

func TestSeedISO(t *testing.T) {
	ud := []byte("#cloud-config\nruncmd: [[touch, /x]]\n")
	img, err := Seed{UserData: ud, InstanceID: "iid-web", Hostname: "web", MAC: "52:54:00:00:00:01"}.ISO(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	if err != nil {
		t.Fatal(err)
	}
	label, files := readRoot(t, img)
	if label != Label {
		t.Errorf("label %q", label)
	}
	want := map[string]string{
		"user-data;1":      string(ud),
		"meta-data;1":      "instance-id: iid-web\nlocal-hostname: web\n",
		"network-config;1": string(NetworkConfig("52:54:00:00:00:01")),
	}
	for name, data := range want {
		if files[name] != data {
			t.Errorf("%s = %q, want %q", name, files[name], data)
		}
	}
	if len(files) != len(want) {
		t.Errorf("files %v", files)
	}
}

// blkid is what cloud-init asks to find the seed by label and type.
func TestSeedISOBlkid(t *testing.T) {
	bin, err := exec.LookPath("blkid")
	if err != nil {
		t.Fatal("blkid not found: install util-linux")
	}
	img, err := Seed{UserData: []byte("#cloud-config\n"), InstanceID: "i", Hostname: "h", MAC: "52:54:00:00:00:01"}.ISO(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "seed.iso")
	if err := os.WriteFile(p, img, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "-p", "-o", "export", p).Output()
	if err != nil {
		t.Fatalf("blkid: %v", err)
	}
	for _, w := range []string{"LABEL=cidata", "TYPE=iso9660"} {
		if !strings.Contains(string(out), w) {
			t.Errorf("blkid says %q, want %s", out, w)
		}
	}
}

func TestWriteISORejects(t *testing.T) {
	for _, files := range [][]File{
		{{Name: ""}},
		{{Name: strings.Repeat("a", 31)}},
		{{Name: "a"}, {Name: "a"}},
	} {
		if _, err := WriteISO("x", files, time.Now()); err == nil {
			t.Errorf("%v accepted", files)
		}
	}
}

// The guest's hostname resolves (no "sudo: unable to resolve host"),
// unless the user's own config says otherwise.
func TestMergeLoginManagesEtcHosts(t *testing.T) {
	doc, _ := ParseUserData([]byte("#cloud-config\n"))
	merged, err := MergeLogin(doc, login)
	if err != nil || merged["manage_etc_hosts"] != true {
		t.Fatalf("manage_etc_hosts = %v, %v", merged["manage_etc_hosts"], err)
	}
	doc, _ = ParseUserData([]byte("#cloud-config\nmanage_etc_hosts: localhost\n"))
	if merged, _ := MergeLogin(doc, login); merged["manage_etc_hosts"] != "localhost" {
		t.Fatalf("the user's manage_etc_hosts was replaced: %v", merged["manage_etc_hosts"])
	}
}

func TestMergeBootcmd(t *testing.T) {
	doc := map[string]any{"bootcmd": []any{"echo mine"}}
	out, err := MergeBootcmd(doc, []string{"sh", "-c", "mount x"})
	if err != nil {
		t.Fatal(err)
	}
	list := out["bootcmd"].([]any)
	if len(list) != 2 || list[0] != "echo mine" || len(list[1].([]any)) != 3 {
		t.Errorf("bootcmd = %v", list)
	}
	if len(doc["bootcmd"].([]any)) != 1 {
		t.Error("MergeBootcmd changed its input")
	}
	if _, err := MergeBootcmd(map[string]any{"bootcmd": "x"}, []string{"true"}); err == nil {
		t.Error("a bootcmd that is not a list was taken")
	}
}
