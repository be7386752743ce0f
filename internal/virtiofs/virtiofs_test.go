package virtiofs

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestIdentityOf(t *testing.T) {
	// Rootless Podman's namespace: one line per parent line, or the kernel
	// refuses the map.
	got, err := IdentityOf("         0       1004          1\n         1     296608      65536\n")
	want := []IDMap{{0, 0, 1}, {1, 1, 65536}}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("IdentityOf = %v, %v; want %v", got, err, want)
	}
	if got, err := IdentityOf("0 0 4294967295\n"); err != nil || !reflect.DeepEqual(got, []IDMap{{0, 0, 4294967295}}) {
		t.Errorf("IdentityOf(init) = %v, %v", got, err)
	}
	for _, bad := range []string{"", "1 1000 5\n", "0 0\n", "0 x 1\n", "0 0 0\n"} {
		if _, err := IdentityOf(bad); err == nil {
			t.Errorf("IdentityOf(%q) took it", bad)
		}
	}
}

func TestSubordinate(t *testing.T) {
	f := filepath.Join(t.TempDir(), "subuid")
	os.WriteFile(f, []byte("other:100000:65536\nme:165536:100000\n1234:300000:10\n"), 0o644)
	if m, err := subordinate(f, "me", 1001); err != nil || m != (IDMap{Outside: 165536, Count: 65535}) {
		t.Errorf("by name: %v, %v (want capped at 65535)", m, err)
	}
	if m, err := subordinate(f, "nobody-here", 1234); err != nil || m != (IDMap{Outside: 300000, Count: 10}) {
		t.Errorf("by uid: %v, %v", m, err)
	}
	if _, err := subordinate(f, "ghost", 99); err == nil {
		t.Error("a user with no range got one")
	}
}

func TestCheckEntries(t *testing.T) {
	ok := []Entry{{Name: "rootfs", Source: "/a"}, {Name: "m3", Source: "/b/c", ReadOnly: true}}
	if err := CheckEntries(ok); err != nil {
		t.Fatal(err)
	}
	for _, bad := range [][]Entry{
		{{Name: "", Source: "/a"}},
		{{Name: "..", Source: "/a"}},
		{{Name: "a/b", Source: "/a"}},
		{{Name: "a", Source: "rel"}},
		{{Name: "a", Source: "/a"}, {Name: "a", Source: "/b"}},
	} {
		if err := CheckEntries(bad); err == nil {
			t.Errorf("CheckEntries(%v) took it", bad)
		}
	}
}

func TestCmdline(t *testing.T) {
	ms := []GuestMount{{Name: "0", Target: "/data"}, {Name: "1", Target: "/srv/ro", ReadOnly: true}}
	p := CmdlineParam(ms)
	if p != "hutch.fs=0:/data,1:/srv/ro:ro" {
		t.Errorf("CmdlineParam = %q", p)
	}
	if got := ParseCmdline("console=ttyS0 " + p + " quiet"); !reflect.DeepEqual(got, ms) {
		t.Errorf("ParseCmdline = %v, want %v", got, ms)
	}
	// What a guest init gets wrong is skipped, not guessed at.
	if got := ParseCmdline("hutch.fs=0:rel,:/x,1:/ok"); !reflect.DeepEqual(got, []GuestMount{{Name: "1", Target: "/ok"}}) {
		t.Errorf("ParseCmdline(bad) = %v", got)
	}
	s := Script(ms)
	for _, want := range []string{"mount -t virtiofs hutch /run/hutch/fs", "mount --bind /run/hutch/fs/0 '/data'", "mount -o remount,bind,ro '/srv/ro'"} {
		if !strings.Contains(s, want) {
			t.Errorf("Script lacks %q: %s", want, s)
		}
	}
}

func TestEntryBase(t *testing.T) {
	e := Entry{Name: "m9", Source: "/etc", Base: "etc"}
	if e.Path() != "m9/etc" {
		t.Errorf("Path = %q", e.Path())
	}
	if err := CheckEntries([]Entry{e}); err != nil {
		t.Error(err)
	}
	for _, bad := range []string{"..", "a/b", "."} {
		if err := CheckEntries([]Entry{{Name: "m1", Source: "/x", Base: bad}}); err == nil {
			t.Errorf("base %q taken", bad)
		}
	}
}
