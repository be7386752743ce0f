package vm

import (
	"fmt"
	"math/big"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/hutch-vm/hutch/internal/netstack"
)

// fuzzOneLine reports whether msg fits on one line: the CLI prints an
// error as one line, so a raw newline from user input would forge another.
func fuzzOneLine(msg string) bool { return !strings.ContainsAny(msg, "\r\n") }

// sizeBytes is the size s names in bytes, read independently of the
// parser's regexp from the parts an accepted size has: digits, then an
// optional unit letter (a bare number is MiB).
func sizeBytes(s string) *big.Int {
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	n, _ := new(big.Int).SetString(s[:i], 10)
	shift := uint(20)
	if i < len(s) {
		switch s[i] {
		case 'k', 'K':
			shift = 10
		case 'g', 'G':
			shift = 30
		case 't', 'T':
			shift = 40
		}
	}
	return n.Lsh(n, shift)
}

func FuzzParseMemory(f *testing.F) {
	for _, s := range []string{
		// From TestParseMemory.
		"256M", "256", "2G", "1g", "512MiB", "1GB", "16384K", "1T",
		"0", "lots", "", "-1G", "15M", "1500K", "5T", "99999999999999999999G", "1.5G",
		// Edges: the bounds, units alone, a trailing newline.
		"16", "16M", "4T", "4096G", "4194304M", "4194305M", "4294967296K", "M", "MiB", "16MIB", "16mb", "16B", "16\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		mib, err := ParseMemory(s)
		if err != nil {
			if !IsInput(err) || !fuzzOneLine(err.Error()) {
				t.Fatalf("ParseMemory(%q) error %q: want a one-line input error", s, err)
			}
			return
		}
		if mib < minMemoryMiB || mib > 4<<20 {
			t.Fatalf("ParseMemory(%q) = %d MiB, outside %d MiB to 4 TiB", s, mib, minMemoryMiB)
		}
		for i := 0; i < len(s); i++ {
			if s[i] >= 0x80 {
				t.Fatalf("ParseMemory(%q) = %d: accepted a size that is not plain ASCII", s, mib)
			}
		}
		// The MiB must be exactly what was written, not a value wrapped
		// around by an overflowing unit shift.
		if got, want := new(big.Int).Lsh(big.NewInt(int64(mib)), 20), sizeBytes(s); got.Cmp(want) != 0 {
			t.Fatalf("ParseMemory(%q) = %d MiB (%v bytes), but it names %v bytes", s, mib, got, want)
		}
		again := fmt.Sprint(mib) + "M"
		if back, err := ParseMemory(again); err != nil || back != mib {
			t.Fatalf("ParseMemory(%q) = %d, but ParseMemory(%q) = %d, %v", s, mib, again, back, err)
		}
	})
}

func FuzzValidName(f *testing.F) {
	for _, s := range []string{
		// From TestValidName.
		"web", "a", "vm-1.test_2", strings.Repeat("x", 63),
		"", "..", ".", "a/b", "-x", ".hidden", "a b", strings.Repeat("x", 64), "ü",
		// Edges: a trailing newline, NUL, a path climbing out.
		"web\n", "web\x00", "../x", "a..b", "0",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		err := ValidName(name)
		if err != nil {
			if !IsInput(err) || !fuzzOneLine(err.Error()) {
				t.Fatalf("ValidName(%q) error %q: want a one-line input error", name, err)
			}
			return
		}
		// The name becomes a directory under the state dir: it must be one
		// plain path element that cannot climb out or hide.
		if len(name) < 1 || len(name) > 63 {
			t.Fatalf("ValidName(%q) accepted %d bytes, want 1-63", name, len(name))
		}
		if strings.ContainsAny(name, "/\\\x00 \t\r\n") || name == "." || name == ".." ||
			filepath.Base(name) != name || filepath.Clean(name) != name {
			t.Fatalf("ValidName(%q) accepted a name that is not one plain path element", name)
		}
		if name[0] == '.' || name[0] == '-' {
			t.Fatalf("ValidName(%q) accepted a hidden or option-like name", name)
		}
		for i := 0; i < len(name); i++ {
			if name[i] >= 0x80 {
				t.Fatalf("ValidName(%q) accepted a non-ASCII name", name)
			}
		}
	})
}

// fuzzList splits a fuzzed string into flag values: ';' separates entries
// (no port spec or test path contains it) and "" is no entries at all.
func fuzzList(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ";")
}

func FuzzParseSpec(f *testing.F) {
	// Name, CPUs, Memory, Publish, Disks, Network; from TestParseSpec and
	// the other table tests.
	f.Add("", 0, "", "8080:80;127.0.0.1:5353:53/udp", "a.img;b.img,ro", "")
	f.Add("web", 2, "256M", "", "", NetPasst)
	f.Add("", -1, "", "", "", "")
	f.Add("", 1000, "", "", "", "")
	f.Add("", 0, "", "", "", "tap")
	f.Add("", 0, "", "80:80", "", NetNone)
	f.Add("", 0, "", "80", "", "")
	f.Add("", 0, "", "", ",ro", "")
	f.Add("../x", 0, "", "", "", "")
	f.Add("", 0, "1.5G", "", "", "")
	f.Add("", 0, "", "", "", "bridge=virbr0")
	f.Add("", 0, "", "8080:80", "", "bridge=virbr0")
	f.Add("", 0, "", "", "", "bridge=")
	f.Add("", 0, "", "", "", "bridge")
	f.Add("vm", 255, "4T", "[::1]:9000-9002:80-82/udp", "x,ro,ro", NetSlirp)
	f.Fuzz(func(t *testing.T, name string, cpus int, memory, publish, disks, network string) {
		o := Options{Name: name, CPUs: cpus, Memory: memory, Kernel: "vmlinuz",
			Publish: fuzzList(publish), Disks: fuzzList(disks), Network: network}
		s, err := ParseSpec(o)
		if err != nil {
			if !IsInput(err) || !fuzzOneLine(err.Error()) {
				t.Fatalf("ParseSpec(%#v) error %q: want a one-line input error", o, err)
			}
			return
		}
		if s.Name != o.Name || (s.Name != "" && ValidName(s.Name) != nil) {
			t.Fatalf("ParseSpec(%#v) name = %q", o, s.Name)
		}
		if s.CPUs < 1 || s.CPUs > maxCPUs || (o.CPUs != 0 && s.CPUs != o.CPUs) {
			t.Fatalf("ParseSpec(%#v) cpus = %d", o, s.CPUs)
		}
		wantMiB := DefaultMemoryMiB
		if o.Memory != "" {
			wantMiB, _ = ParseMemory(o.Memory)
		}
		if s.MemoryMiB != wantMiB {
			t.Fatalf("ParseSpec(%#v) memory = %d MiB, want %d", o, s.MemoryMiB, wantMiB)
		}
		switch s.Network {
		case "", NetPasst, NetSlirp, NetNone:
			if s.Bridge != "" {
				t.Fatalf("ParseSpec(%#v) network %q with bridge %q", o, s.Network, s.Bridge)
			}
		case NetBridge:
			if netstack.ValidBridge(s.Bridge) != nil || o.Network != NetBridge+"="+s.Bridge {
				t.Fatalf("ParseSpec(%#v) bridge = %q", o, s.Bridge)
			}
		default:
			t.Fatalf("ParseSpec(%#v) network = %q", o, s.Network)
		}
		if len(s.Disks) != len(o.Disks) {
			t.Fatalf("ParseSpec(%#v) disks = %+v", o, s.Disks)
		}
		for i, d := range s.Disks {
			// The path is what precedes the first comma, and the disk
			// written back in canonical form parses to itself.
			canon, first := d.Path, d.Path
			if d.Size > 0 {
				canon = fmt.Sprintf("size=%dK", d.Size>>10)
				first = strings.Split(o.Disks[i], ",")[0]
			}
			if d.Format != "" {
				canon += ",format=" + d.Format
			}
			if d.ReadOnly {
				canon += ",ro"
			}
			again, err := parseDisk(canon)
			if d.Path == "" && d.Size == 0 || first != strings.Split(o.Disks[i], ",")[0] || err != nil || again != d {
				t.Fatalf("ParseSpec(%#v) disk %d = %+v (again %+v, %v)", o, i, d, again, err)
			}
		}
		want := []netstack.Forward{}
		for _, p := range o.Publish {
			fwds, err := netstack.ParsePublish(p)
			if err != nil {
				t.Fatalf("ParseSpec(%#v) accepted -p %q, which ParsePublish rejects: %v", o, p, err)
			}
			want = append(want, fwds...)
		}
		if !reflect.DeepEqual(s.Ports, want) {
			t.Fatalf("ParseSpec(%#v) ports = %v, want %v", o, s.Ports, want)
		}
		if len(s.Ports) > 0 && (s.Network == NetNone || s.Network == NetBridge) {
			t.Fatalf("ParseSpec(%#v) forwards ports on network %q", o, s.Network)
		}
	})
}
