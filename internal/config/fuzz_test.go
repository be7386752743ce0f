package config

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// fuzzOneLine reports whether msg fits on one line: hutch prints an error
// as one line, so a newline copied from the file would forge another.
func fuzzOneLine(msg string) bool { return !strings.ContainsAny(msg, "\r\n") }

func FuzzLoad(f *testing.F) {
	for _, s := range []string{
		// From TestLoad.
		"", "rootless = true\n",
		"rootless = true\n[leases]\nfirst = 3000000000\ncount = 100\n",
		"[leases]\ncount = 10\n", "[leases]\nfirst = 200000\n",
		"[leases]\nfirst = 4294967285\ncount = 10\n", "[leases]\ncount = 1048576\n",
		"rootless = false\n", "rootless = \"yes\"\n", "rootles = true\n",
		"[leases]\nfirst = 200000\nlast = 300000\n", "[hypervisor.qemu]\npath = \"/usr/bin/qemu\"\n",
		"rootless = \n", "[leases]\nfirst = 0\ncount = 10\n", "[leases]\nfirst = -5\n",
		"[leases]\nfirst = 5000000000\ncount = 1\n", "[leases]\nfirst = 4294967200\ncount = 1000\n",
		"[leases]\nfirst = 4294967286\ncount = 10\n", "[leases]\ncount = 0\n", "[leases]\ncount = 1048577\n",
		// Other shapes TOML allows for the same keys.
		"leases = {first = 1, count = 1}\n", "leases.first = 0x10000\n", "[[leases]]\nfirst = 1\n",
		"leases = 1\n", "[leases]\nfirst = 1e3\n", "[leases]\ncount = 9223372036854775807\nfirst = 9223372036854775807\n",
		"\"a\\nb\" = 1\n", "rootless = true\nrootless = true\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(t.TempDir(), "hutch.toml")
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		cfg, err := Load(path)
		if err != nil {
			msg := err.Error()
			if !fuzzOneLine(msg) {
				t.Fatalf("Load(%q) error spans lines: %q", data, msg)
			}
			if !strings.HasPrefix(msg, path+": ") && !strings.HasPrefix(msg, "rootless = false in "+path) {
				t.Fatalf("Load(%q) error %q does not start with the file", data, msg)
			}
			return
		}
		if !cfg.Rootless {
			t.Fatalf("Load(%q) = %+v: not rootless", data, cfg)
		}
		// The range must leave out root and (uid_t)-1, and its end must fit
		// a uid_t, or the allocator would hand out an id that means
		// something else to the kernel.
		first, count := uint64(cfg.Leases.First), uint64(cfg.Leases.Count)
		if first == 0 || count == 0 || count > MaxLeaseCount || first+count-1 > maxID {
			t.Fatalf("Load(%q) = %+v: range %d..%d is not within 1..%d", data, cfg, first, first+count-1, uint64(maxID))
		}
		// What was loaded, written back as the file, loads the same.
		again := fmt.Sprintf("rootless = true\n[leases]\nfirst = %d\ncount = %d\n", first, count)
		if err := os.WriteFile(path, []byte(again), 0o644); err != nil {
			t.Fatal(err)
		}
		if back, err := Load(path); err != nil || back != cfg {
			t.Fatalf("Load(%q) = %+v, but its rewrite %q loads as %+v, %v", data, cfg, again, back, err)
		}
	})
}

func FuzzRootlessAnnotation(f *testing.F) {
	// The value of each key and whether it is present; from
	// TestRootlessAnnotation.
	f.Add("", false, "", false)
	f.Add("true", true, "", false)
	f.Add("", false, "true", true)
	f.Add("true", true, "1", true)
	f.Add("false", true, "", false)
	f.Add("", false, "false", true)
	f.Add("true", true, "false", true)
	f.Add("maybe", true, "", false)
	f.Add("", true, "", false)
	f.Add("T", true, "0", true)
	f.Add("true\n", true, "", false)
	f.Fuzz(func(t *testing.T, cur string, hasCur bool, legacy string, hasLegacy bool) {
		ann := map[string]string{"io.katacontainers.config.hypervisor.path": "/usr/bin/qemu"}
		if hasCur {
			ann[AnnotationRootless] = cur
		}
		if hasLegacy {
			ann[AnnotationRootlessLegacy] = legacy
		}
		set, err := RootlessAnnotation(ann)
		if set != (hasCur || hasLegacy) {
			t.Fatalf("RootlessAnnotation(%q) set = %v", ann, set)
		}
		// Accepted exactly when every value present says true as Kata
		// reads it: hutch cannot honour false and must not guess.
		isTrue := func(v string) bool { b, err := strconv.ParseBool(v); return err == nil && b }
		ok := (!hasCur || isTrue(cur)) && (!hasLegacy || isTrue(legacy))
		if (err == nil) != ok {
			t.Fatalf("RootlessAnnotation(%q) error = %v, want accepted=%v", ann, err, ok)
		}
		if err != nil {
			msg := err.Error()
			if !fuzzOneLine(msg) || !strings.HasPrefix(msg, "annotation io.katacontainers.") {
				t.Fatalf("RootlessAnnotation(%q) error %q: want one line naming the annotation", ann, msg)
			}
		}
	})
}
