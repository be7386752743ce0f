// Package accel decides which accelerator a VM runs on. KVM is chosen only
// when it can run a guest of the CPU model hutch asks QEMU for, not merely
// when /dev/kvm opens: nested virtualisation can offer a device that
// creates VMs yet hides CPU features, and QEMU then aborts or the guest
// hangs. Every face of hutch (session, system, hutch-runtime, check) asks
// this one package.
package accel

import (
	"fmt"
	"strings"
)

// Modes a user may ask for (--accel, the accel config key).
const (
	Auto = "auto"
	KVM  = "kvm"
	TCG  = "tcg"
)

// Device is the KVM device node.
const Device = "/dev/kvm"

// ParseMode checks a requested mode; "" means auto.
func ParseMode(s string) (string, error) {
	switch s {
	case "", Auto:
		return Auto, nil
	case KVM, TCG:
		return s, nil
	}
	return "", fmt.Errorf("accelerator %q: use auto, kvm or tcg", s)
}

// Probe is what a host offers: whether KVM runs hutch's guests, and if not,
// why (a phrase that completes "<device> ...").
type Probe struct {
	Device string `json:"device"`
	Usable bool   `json:"usable"`
	Why    string `json:"why,omitempty"`
	// Nested is set when the device exists and opens but fails a deeper
	// check, the signature of nested virtualisation without CPU features.
	Nested bool `json:"nested,omitempty"`
}

// Problem is the one-line cause of an unusable KVM.
func (p Probe) Problem() string {
	if p.Usable {
		return ""
	}
	if p.Nested {
		return fmt.Sprintf("%s is present but unusable: %s (nested virtualisation without CPU features?)", p.Device, p.Why)
	}
	return p.Device + " " + p.Why
}

// Decision is the accelerator chosen for a VM and why, recorded with it
// and shown by inspect.
type Decision struct {
	Requested string `json:"requested"`
	Accel     string `json:"accel"`
	Reason    string `json:"reason"`
}

// Notice is the one line printed when auto fell back to TCG; empty
// otherwise (a user who asked for TCG needs no warning).
func (d Decision) Notice() string {
	if d.Requested == Auto && d.Accel == TCG {
		return d.Reason + "; using TCG software emulation, which is much slower"
	}
	return ""
}

// Choose applies a requested mode to a probe. An explicit kvm on a host
// where KVM is unusable is an error naming the cause, so nothing starts;
// the caller says where kvm was asked for.
func Choose(mode string, p Probe) (Decision, error) {
	mode, err := ParseMode(mode)
	if err != nil {
		return Decision{}, err
	}
	d := Decision{Requested: mode}
	switch {
	case mode == TCG:
		d.Accel, d.Reason = TCG, "tcg requested"
	case p.Usable:
		d.Accel, d.Reason = KVM, p.Device+" runs guests"
	case mode == KVM:
		return Decision{}, fmt.Errorf("kvm cannot be used: %s; ask for auto or tcg instead, or see hutch check", p.Problem())
	default:
		d.Accel, d.Reason = TCG, p.Problem()
	}
	return d, nil
}

// Decide probes device (unless TCG is asked for, which needs no probe)
// and chooses.
func Decide(mode, device string) (Decision, error) {
	p := Probe{Device: device}
	if mode != TCG {
		p = ProbeDevice(device)
	}
	return Choose(mode, p)
}

// feature is one CPUID bit of the baseline.
type feature struct {
	name     string
	leaf     uint32
	reg      byte // 'c' ecx, 'd' edx
	bit      uint
	required bool
}

// baseline is x86-64-v2 (what distribution kernels and userlands of this
// decade assume, and what QEMU's host model passes through), plus the
// long-mode bits. A KVM that cannot offer it to a guest is useless to
// hutch even if it runs a real-mode hlt.
var baseline = []feature{
	{"FPU", 1, 'd', 0, true}, {"TSC", 1, 'd', 4, true}, {"MSR", 1, 'd', 5, true}, {"PAE", 1, 'd', 6, true},
	{"CX8", 1, 'd', 8, true}, {"APIC", 1, 'd', 9, true}, {"CMOV", 1, 'd', 15, true}, {"PAT", 1, 'd', 16, true},
	{"CLFLUSH", 1, 'd', 19, true}, {"MMX", 1, 'd', 23, true}, {"FXSR", 1, 'd', 24, true},
	{"SSE", 1, 'd', 25, true}, {"SSE2", 1, 'd', 26, true},
	{"SSE3", 1, 'c', 0, true}, {"SSSE3", 1, 'c', 9, true}, {"CX16", 1, 'c', 13, true},
	{"SSE4.1", 1, 'c', 19, true}, {"SSE4.2", 1, 'c', 20, true}, {"POPCNT", 1, 'c', 23, true},
	{"LAHF_LM", 0x80000001, 'c', 0, true}, {"NX", 0x80000001, 'd', 20, true}, {"LM", 0x80000001, 'd', 29, true},
}

// CPUIDEntry is one leaf of KVM_GET_SUPPORTED_CPUID (index 0 only matters
// for the baseline's leaves).
type CPUIDEntry struct {
	Function, Index, EAX, EBX, ECX, EDX uint32
}

// Missing lists the baseline features a supported-CPUID table lacks, in
// baseline order; empty when a guest of hutch's CPU model can run.
func Missing(entries []CPUIDEntry) []string {
	var out []string
	for _, f := range baseline {
		var reg uint32
		for _, e := range entries {
			if e.Function == f.leaf && e.Index == 0 {
				if f.reg == 'c' {
					reg = e.ECX
				} else {
					reg = e.EDX
				}
				break
			}
		}
		if reg&(1<<f.bit) == 0 {
			out = append(out, f.name)
		}
	}
	return out
}

// missingPhrase words a Missing list for a notice: the first few names.
func missingPhrase(m []string) string {
	if len(m) > 4 {
		m = append(m[:4:4], fmt.Sprintf("%d more", len(m)-4))
	}
	return "KVM offers no " + strings.Join(m, ", ")
}
