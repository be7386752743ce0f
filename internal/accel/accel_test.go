package accel

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// Recorded KVM_GET_SUPPORTED_CPUID leaves (index 0) of two hosts.
var (
	// A nested Debian 12 host whose /dev/kvm creates VMs and runs a hlt
	// guest, but where QEMU aborts (-cpu host) or the guest hangs.
	nestedNoSSE3 = []CPUIDEntry{
		{Function: 1, ECX: 0x81202000, EDX: 0x078bfbff},
		{Function: 0x80000001, ECX: 0x00400393, EDX: 0x23d3fbff},
	}
	// A bare-metal Intel host (Skylake) where KVM works.
	skylake = []CPUIDEntry{
		{Function: 1, ECX: 0xf7fa3223, EDX: 0x178bfbff},
		{Function: 0x80000001, ECX: 0x00000121, EDX: 0x2c100800},
	}
)

func TestMissingBaseline(t *testing.T) {
	for _, c := range []struct {
		name    string
		entries []CPUIDEntry
		want    []string
	}{
		{"nested without SSE3", nestedNoSSE3, []string{"SSE3", "SSSE3", "SSE4.1", "SSE4.2", "POPCNT"}},
		{"bare metal", skylake, nil},
		{"no leaves at all", nil, baselineNames()},
		{"leaf 1 only", skylake[:1], []string{"LAHF_LM", "NX", "LM"}},
	} {
		if got := Missing(c.entries); !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s: Missing = %q, want %q", c.name, got, c.want)
		}
	}
	if got := missingPhrase(Missing(nestedNoSSE3)); got != "KVM offers no SSE3, SSSE3, SSE4.1, SSE4.2, 1 more" {
		t.Errorf("phrase = %q", got)
	}
}

func baselineNames() []string {
	var n []string
	for _, f := range baseline {
		n = append(n, f.name)
	}
	return n
}

func TestChoose(t *testing.T) {
	usable := Probe{Device: Device, Usable: true}
	nested := Probe{Device: Device, Nested: true, Why: "KVM offers no SSE3"}
	absent := Probe{Device: Device, Why: "does not exist (no hardware virtualisation here)"}
	for _, c := range []struct {
		mode      string
		probe     Probe
		accel     string
		notice    string // substring; "" means none
		wantError string
	}{
		{"", usable, KVM, "", ""},
		{Auto, usable, KVM, "", ""},
		{TCG, usable, TCG, "", ""},
		{KVM, usable, KVM, "", ""},
		{Auto, nested, TCG, "/dev/kvm is present but unusable: KVM offers no SSE3 (nested virtualisation without CPU features?); using TCG", ""},
		{Auto, absent, TCG, "/dev/kvm does not exist", ""},
		{TCG, nested, TCG, "", ""},
		{KVM, nested, "", "", "kvm cannot be used: /dev/kvm is present but unusable: KVM offers no SSE3"},
		{KVM, absent, "", "", "kvm cannot be used: /dev/kvm does not exist"},
		{"hvf", usable, "", "", `accelerator "hvf": use auto, kvm or tcg`},
	} {
		d, err := Choose(c.mode, c.probe)
		if c.wantError != "" {
			if err == nil || !strings.Contains(err.Error(), c.wantError) {
				t.Errorf("Choose(%q, %+v) error = %v, want %q", c.mode, c.probe, err, c.wantError)
			}
			continue
		}
		if err != nil || d.Accel != c.accel {
			t.Errorf("Choose(%q, %+v) = %+v, %v; want %s", c.mode, c.probe, d, err, c.accel)
			continue
		}
		if n := d.Notice(); (c.notice == "") != (n == "") || !strings.Contains(n, c.notice) {
			t.Errorf("Choose(%q, %+v).Notice() = %q, want %q", c.mode, c.probe, n, c.notice)
		}
		if d.Reason == "" {
			t.Errorf("Choose(%q, %+v) gives no reason", c.mode, c.probe)
		}
	}
}

// A fake device: a missing node, and a file that opens but is no KVM (the
// first ioctl fails), which must be unusable, not a crash or a hang.
func TestProbeDeviceFakes(t *testing.T) {
	dir := t.TempDir()
	p := ProbeDevice(filepath.Join(dir, "kvm"))
	if p.Usable || !strings.Contains(p.Why, "does not exist") {
		t.Errorf("missing device: %+v", p)
	}
	fake := filepath.Join(dir, "fake-kvm")
	if err := os.WriteFile(fake, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	p = ProbeDevice(fake)
	if p.Usable || !p.Nested || !strings.Contains(p.Why, "API version") {
		t.Errorf("a regular file as the device: %+v", p)
	}
	if os.Geteuid() != 0 {
		if err := os.Chmod(fake, 0); err != nil {
			t.Fatal(err)
		}
		if p = ProbeDevice(fake); p.Usable || !strings.Contains(p.Why, "not accessible") {
			t.Errorf("unreadable device: %+v", p)
		}
	}
}

// The live probe must agree with itself and never claim a host whose
// supported CPUID lacks the baseline.
func TestProbeLiveHost(t *testing.T) {
	p := ProbeDevice(Device)
	t.Logf("this host: %+v", p)
	if p.Usable && p.Why != "" {
		t.Errorf("usable with a reason: %+v", p)
	}
	if !p.Usable && p.Why == "" {
		t.Errorf("unusable without a reason: %+v", p)
	}
}
