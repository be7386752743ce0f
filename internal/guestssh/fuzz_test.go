package guestssh

import (
	"strings"
	"testing"
)

// FuzzParseOperand: an operand parses to a host path (the input itself)
// or a guest path under a valid VM name, or fails; nothing is lost.
func FuzzParseOperand(f *testing.F) {
	for _, s := range []string{"web:/etc/hosts", "./a:b", "/tmp/x", "web:", "", "-x:/y", "a.b-c_d:rel/path"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		o, err := ParseOperand(s)
		if err != nil {
			return
		}
		if o.VM == "" {
			if o.Path != s {
				t.Fatalf("host path %q from %q", o.Path, s)
			}
			return
		}
		if o.VM+":"+o.Path != s || o.Path == "" || strings.ContainsAny(o.VM, "/:") {
			t.Fatalf("ParseOperand(%q) = %+v", s, o)
		}
	})
}

// FuzzHostKeys: whatever the console holds, the keys found are single
// "type base64" tokens that make one known_hosts line each.
func FuzzHostKeys(f *testing.F) {
	f.Add(console)
	f.Add("-----BEGIN SSH HOST KEY KEYS-----\nssh-rsa AAAA\n")
	f.Fuzz(func(t *testing.T, s string) {
		for _, k := range HostKeys([]byte(s)) {
			if strings.ContainsAny(k, "\r\n") || len(strings.Fields(k)) != 2 {
				t.Fatalf("key %q", k)
			}
		}
	})
}
