package e2e

import (
	"encoding/json"
	"os"
	"slices"
	"strings"
	"testing"
)

// hutch check as an ordinary user: every check answers with the four
// fields, the KVM check matches what this machine really has, and a host
// without KVM still counts as able to run VMs (TCG).
func TestCheck(t *testing.T) {
	t.Parallel()
	u := newUser(t, "hutchtest1")
	r := u.run("check", "--format", "json")
	if r.code != 0 {
		t.Fatalf("hutch check --format json: %v; want exit 0 (QEMU is installed, TCG works)", r)
	}
	var raw []map[string]any
	if err := json.Unmarshal([]byte(r.out), &raw); err != nil {
		t.Fatalf("check output is not a JSON list: %v: %s", err, r.out)
	}
	if len(raw) < 10 {
		t.Errorf("check lists %d checks, want at least 10: %s", len(raw), r.out)
	}
	want := []string{"check", "detail", "fix", "status"}
	var kvm map[string]any
	for _, c := range raw {
		keys := make([]string, 0, len(c))
		for k := range c {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		if !slices.Equal(keys, want) {
			t.Errorf("check %v has fields %v, want exactly %v", c["check"], keys, want)
		}
		if s := c["status"]; s != "ok" && s != "warn" && s != "fail" {
			t.Errorf("check %v has status %v", c["check"], s)
		}
		if s := c["status"]; s != "ok" && c["fix"] == "" {
			t.Errorf("check %v is %v without a fix", c["check"], s)
		}
		if c["check"] == "kvm" {
			kvm = c
		}
	}
	if kvm == nil {
		t.Fatalf("no kvm check in %s", r.out)
	}
	// Whether /dev/kvm really opens read-write for the test user, with the
	// same credentials hutch ran with.
	probe := u.cmd()
	probe.Path, probe.Args = "/bin/sh", []string{"sh", "-c", "exec 3<>/dev/kvm"}
	usable := probe.Run() == nil
	_, statErr := os.Stat("/dev/kvm")
	detail, _ := kvm["detail"].(string)
	switch {
	case usable && kvm["status"] != "ok":
		t.Errorf("/dev/kvm opens for %s but the kvm check says %v", u.name, kvm)
	case !usable && (kvm["status"] == "ok" || detail == "" || kvm["fix"] == ""):
		t.Errorf("/dev/kvm does not open for %s but the kvm check says %v", u.name, kvm)
	case statErr != nil && !strings.Contains(detail, "/dev/kvm does not exist"):
		t.Errorf("/dev/kvm is absent but the kvm check says %q", detail)
	}

	if r := u.run("check", "--format", "yaml"); r.code != 2 || !strings.Contains(r.err, `unknown --format "yaml"`) {
		t.Errorf("hutch check --format yaml: %v; want exit 2 naming the format", r)
	}
}
