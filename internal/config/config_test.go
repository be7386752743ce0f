package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLoad(t *testing.T) {
	def := Defaults()
	tests := []struct {
		name    string
		content string // "" with missing: no file at all
		missing bool
		want    Config
		errHas  []string // every substring must appear; nil means success
	}{
		{name: "missing file", missing: true, want: def},
		{name: "empty file", content: "", want: def},
		{name: "rootless true", content: "rootless = true\n", want: def},
		{name: "accel tcg", content: "accel = \"tcg\"\n", want: Config{Rootless: true, Accel: "tcg", BootTimeout: DefaultBootTimeout, Container: def.Container, Leases: def.Leases}},
		{name: "accel kvm", content: "accel = \"kvm\"\n", want: Config{Rootless: true, Accel: "kvm", BootTimeout: DefaultBootTimeout, Container: def.Container, Leases: def.Leases}},
		{name: "boot timeout", content: "boot_timeout = \"2m\"\n", want: Config{Rootless: true, Accel: "auto", BootTimeout: 2 * time.Minute, Container: def.Container, Leases: def.Leases}},
		{name: "boot timeout zero", content: "boot_timeout = \"0s\"\n", errHas: []string{`PATH: boot_timeout = "0s": give a duration from 1s to 1h`}},
		{name: "boot timeout words", content: "boot_timeout = \"soon\"\n", errHas: []string{`PATH: boot_timeout = "soon"`}},
		{name: "accel unknown", content: "accel = \"hvf\"\n", errHas: []string{`PATH: accel = "hvf": set it to auto, kvm or tcg`}},
		{name: "accel empty", content: "accel = \"\"\n", errHas: []string{`PATH: accel = "": set it to auto, kvm or tcg`}},
		{
			name:    "container",
			content: "[container]\nkernel_params = \" lockdown=integrity  mitigations=off \"\ntcg_tb_size = 64\n",
			want:    Config{Rootless: true, Accel: "auto", BootTimeout: DefaultBootTimeout, Leases: def.Leases, Container: Container{KernelParams: "lockdown=integrity  mitigations=off", TBSizeMiB: 64}},
		},
		{
			name:    "container params only keep the code buffer",
			content: "[container]\nkernel_params = \"quiet\"\n",
			want:    Config{Rootless: true, Accel: "auto", BootTimeout: DefaultBootTimeout, Leases: def.Leases, Container: Container{KernelParams: "quiet", TBSizeMiB: DefaultTBSizeMiB}},
		},
		{name: "code buffer too small", content: "[container]\ntcg_tb_size = 1\n", errHas: []string{"PATH: [container] tcg_tb_size = 1: give the code buffer in MiB, from 4 to 1024"}},
		{name: "code buffer too large", content: "[container]\ntcg_tb_size = 99999999999\n", errHas: []string{"PATH: [container] tcg_tb_size = 99999999999"}},
		{name: "kernel params with a line break", content: "[container]\nkernel_params = \"quiet\\ninit=/bin/sh\"\n", errHas: []string{`PATH: [container] kernel_params holds '\n' at byte 5; give printable ASCII`}},
		{name: "kernel params too long", content: "[container]\nkernel_params = \"" + strings.Repeat("a", 1025) + "\"\n", errHas: []string{"PATH: [container] kernel_params is 1025 bytes", "at most 1024"}},
		{name: "unknown key in container", content: "[container]\nmemory = 128\n", errHas: []string{"PATH: unknown key \"container.memory\"", "container.tcg_tb_size"}},
		{
			name:    "range",
			content: "rootless = true\n[leases]\nfirst = 3000000000\ncount = 100\n",
			want:    Config{Rootless: true, Accel: "auto", BootTimeout: DefaultBootTimeout, Container: def.Container, Leases: LeaseRange{First: 3000000000, Count: 100}},
		},
		{
			name:    "count only keeps default first",
			content: "[leases]\ncount = 10\n",
			want:    Config{Rootless: true, Accel: "auto", BootTimeout: DefaultBootTimeout, Container: def.Container, Leases: LeaseRange{First: DefaultLeaseFirst, Count: 10}},
		},
		{
			name:    "first only keeps default count",
			content: "[leases]\nfirst = 200000\n",
			want:    Config{Rootless: true, Accel: "auto", BootTimeout: DefaultBootTimeout, Container: def.Container, Leases: LeaseRange{First: 200000, Count: DefaultLeaseCount}},
		},
		{
			name:    "range ending at the last usable id",
			content: "[leases]\nfirst = 4294967285\ncount = 10\n",
			want:    Config{Rootless: true, Accel: "auto", BootTimeout: DefaultBootTimeout, Container: def.Container, Leases: LeaseRange{First: 4294967285, Count: 10}},
		},
		{
			name:    "largest count",
			content: "[leases]\ncount = 1048576\n",
			want:    Config{Rootless: true, Accel: "auto", BootTimeout: DefaultBootTimeout, Container: def.Container, Leases: LeaseRange{First: DefaultLeaseFirst, Count: 1 << 20}},
		},
		{
			name:    "rootless false",
			content: "rootless = false\n",
			errHas:  []string{"rootless = false in PATH is not supported: hutch never runs a VMM as root; remove the line or set rootless = true"},
		},
		{
			name:    "rootless not a bool",
			content: "rootless = \"yes\"\n",
			errHas:  []string{"PATH: ", "rootless"},
		},
		{
			name:    "unknown top-level key",
			content: "rootles = true\n",
			errHas:  []string{"PATH: unknown key \"rootles\""},
		},
		{
			name:    "unknown key in leases",
			content: "[leases]\nfirst = 200000\nlast = 300000\n",
			errHas:  []string{"PATH: unknown key \"leases.last\""},
		},
		{
			name:    "unknown table",
			content: "[hypervisor.qemu]\npath = \"/usr/bin/qemu\"\n",
			errHas:  []string{"PATH: unknown key", "\"hypervisor.qemu.path\""},
		},
		{
			name:    "syntax error",
			content: "rootless = \n",
			errHas:  []string{"PATH: ", "line 1"},
		},
		{
			name:    "first zero includes root",
			content: "[leases]\nfirst = 0\ncount = 10\n",
			errHas:  []string{"PATH: [leases] first = 0", "uid 0", "set first to a positive id"},
		},
		{
			name:    "negative first",
			content: "[leases]\nfirst = -5\n",
			errHas:  []string{"PATH: [leases] first = -5", "set first to a positive id"},
		},
		{
			name:    "first beyond uint32",
			content: "[leases]\nfirst = 5000000000\ncount = 1\n",
			errHas:  []string{"PATH: [leases] first = 5000000000", "set first to at most 4294967294"},
		},
		{
			name:    "range overflows uint32",
			content: "[leases]\nfirst = 4294967200\ncount = 1000\n",
			errHas:  []string{"PATH: [leases] first = 4294967200, count = 1000", "lower first or count"},
		},
		{
			name:    "range would include (uid_t)-1",
			content: "[leases]\nfirst = 4294967286\ncount = 10\n",
			errHas:  []string{"PATH: [leases]", "lower first or count"},
		},
		{
			name:    "count zero",
			content: "[leases]\ncount = 0\n",
			errHas:  []string{"PATH: [leases] count = 0", "set count to at least 1"},
		},
		{
			name:    "count too large",
			content: "[leases]\ncount = 1048577\n",
			errHas:  []string{"PATH: [leases] count = 1048577", "maximum 1048576", "lower count"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "hutch.toml")
			if !tt.missing {
				if err := os.WriteFile(path, []byte(tt.content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			got, err := Load(path)
			if tt.errHas == nil {
				if err != nil {
					t.Fatalf("Load: %v", err)
				}
				if got != tt.want {
					t.Fatalf("Load = %+v, want %+v", got, tt.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("Load = %+v, want an error", got)
			}
			msg := err.Error()
			if strings.Contains(msg, "\n") {
				t.Errorf("error spans lines: %q", msg)
			}
			if !strings.Contains(msg, path) {
				t.Errorf("error %q does not name %s", msg, path)
			}
			for _, want := range tt.errHas {
				want = strings.ReplaceAll(want, "PATH", path)
				if !strings.Contains(msg, want) {
					t.Errorf("error %q lacks %q", msg, want)
				}
			}
			if !strings.HasPrefix(msg, path) && !strings.HasPrefix(msg, "rootless = false in "+path) {
				t.Errorf("error %q does not start with the file", msg)
			}
		})
	}
}

func TestLoadUnreadable(t *testing.T) {
	// A directory where the file should be: a read error, not the defaults.
	dir := t.TempDir()
	_, err := Load(dir)
	if err == nil || !strings.HasPrefix(err.Error(), dir+": read config") {
		t.Fatalf("Load(dir) = %v, want a read error naming %s", err, dir)
	}
}

func TestDefaults(t *testing.T) {
	d := Defaults()
	if !d.Rootless || d.Leases.First != 1879048192 || d.Leases.Count != 65536 {
		t.Fatalf("Defaults() = %+v", d)
	}
	if err := checkRange(int64(d.Leases.First), int64(d.Leases.Count)); err != nil {
		t.Fatalf("default range is invalid: %v", err)
	}
}

func TestRootlessAnnotation(t *testing.T) {
	tests := []struct {
		name   string
		ann    map[string]string
		set    bool
		errHas []string
	}{
		{name: "nil", ann: nil},
		{name: "unrelated", ann: map[string]string{"io.katacontainers.config.hypervisor.path": "/usr/bin/qemu"}},
		{name: "true", ann: map[string]string{AnnotationRootless: "true"}, set: true},
		{name: "legacy true", ann: map[string]string{AnnotationRootlessLegacy: "true"}, set: true},
		{name: "both true", ann: map[string]string{AnnotationRootless: "true", AnnotationRootlessLegacy: "1"}, set: true},
		{
			name:   "false",
			ann:    map[string]string{AnnotationRootless: "false"},
			set:    true,
			errHas: []string{AnnotationRootless, "not supported: hutch never runs a VMM as root", "remove the annotation"},
		},
		{
			name:   "legacy false",
			ann:    map[string]string{AnnotationRootlessLegacy: "false"},
			set:    true,
			errHas: []string{AnnotationRootlessLegacy, "not supported: hutch never runs a VMM as root"},
		},
		{
			name:   "one true one false",
			ann:    map[string]string{AnnotationRootless: "true", AnnotationRootlessLegacy: "false"},
			set:    true,
			errHas: []string{AnnotationRootlessLegacy, "not supported"},
		},
		{
			name:   "not a boolean",
			ann:    map[string]string{AnnotationRootless: "maybe"},
			set:    true,
			errHas: []string{AnnotationRootless, `"maybe"`, "not a boolean"},
		},
		{
			name:   "empty value",
			ann:    map[string]string{AnnotationRootless: ""},
			set:    true,
			errHas: []string{"not a boolean"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			set, err := RootlessAnnotation(tt.ann)
			if set != tt.set {
				t.Errorf("set = %v, want %v", set, tt.set)
			}
			if tt.errHas == nil {
				if err != nil {
					t.Fatalf("err = %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("want an error")
			}
			for _, want := range tt.errHas {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q lacks %q", err, want)
				}
			}
		})
	}
}
