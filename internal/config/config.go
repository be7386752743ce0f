// Package config reads hutch's system configuration, /etc/hutch/hutch.toml.
package config

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/hutch-vm/hutch/internal/accel"
)

// SystemPath is the configuration read when root runs hutch.
const SystemPath = "/etc/hutch/hutch.toml"

// UserPath is the configuration read when an ordinary user runs hutch or
// hutch-runtime: $XDG_CONFIG_HOME/hutch/hutch.toml, ~/.config by default.
// The same keys apply; leases only matter to system mode.
func UserPath() (string, error) {
	dir, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("find the user's config dir: %w", err)
	}
	return filepath.Join(dir, "hutch", "hutch.toml"), nil
}

// PathFor is the configuration file for a process with effective uid euid.
func PathFor(euid int) (string, error) {
	if euid == 0 {
		return SystemPath, nil
	}
	return UserPath()
}

// The default lease range starts just past systemd-nspawn's container range
// (0x00080000-0x6FFFFFFF) and far above shadow's subordinate ranges (which
// grow up from 100000 in blocks of 65536), so it collides with nothing a
// stock host hands out. Ids the host does use are skipped at lease time.
const (
	DefaultLeaseFirst = 0x70000000 // 1879048192
	DefaultLeaseCount = 65536
)

// MaxLeaseCount bounds the range: the allocator scans it under a lock, and
// no host runs a million VMs.
const MaxLeaseCount = 1 << 20

// maxID is the highest usable id: 4294967295 is (uid_t)-1, which setresuid
// and chown read as "leave unchanged".
const maxID = math.MaxUint32 - 1

// Config is what the system configuration file decides.
type Config struct {
	// Rootless is always true once loaded: Kata's key is accepted so that
	// a shared config reads the same here, but a VMM never runs as root.
	Rootless bool
	// Leases is where system-mode VMMs get their uid and gid.
	Leases LeaseRange
	// Accel is the accelerator mode of a VM that names none: auto, kvm
	// or tcg.
	Accel string
	// BootTimeout bounds how long hutch-runtime create waits for a
	// container's guest to start its agent.
	BootTimeout time.Duration
	// Container is what a container's VM is built with.
	Container Container
}

// Container tunes the VM hutch-runtime makes for a container or a pod.
type Container struct {
	// KernelParams is appended to the guest kernel's command line, after
	// hutch's own parameters, so a later one of the same name wins where
	// the kernel takes the last.
	KernelParams string
	// TBSizeMiB is TCG's translated-code buffer; all of it is resident
	// once the guest has booted. A smaller one costs code-heavy work
	// time (docs/benchmarks.md). Without TCG it does nothing.
	TBSizeMiB int
}

// DefaultTBSizeMiB is the code buffer kept after measuring 8 to 64 MiB:
// half the time of 8 MiB on code-heavy work, for 8 MiB more.
const DefaultTBSizeMiB = 16

// maxKernelParams leaves room for hutch's own parameters: the kernel's
// command line is at most 2048 bytes on x86.
const maxKernelParams = 1024

// The code buffer's bounds, in MiB: 4, the smallest measured here, still
// boots a guest; 1 GiB is QEMU's own default on a 64-bit host.
const minTBSize, maxTBSize = 4, 1024

// DefaultBootTimeout is generous for a guest under TCG on a busy host;
// one that never says hello is broken.
const DefaultBootTimeout = 90 * time.Second

// LeaseRange is the ids First .. First+Count-1; each VM leases one id as
// both its uid and gid.
type LeaseRange struct {
	First, Count uint32
}

// Defaults is the configuration of a host without a config file.
func Defaults() Config {
	return Config{
		Rootless:    true,
		Accel:       accel.Auto,
		BootTimeout: DefaultBootTimeout,
		Leases:      LeaseRange{First: DefaultLeaseFirst, Count: DefaultLeaseCount},
		Container:   Container{TBSizeMiB: DefaultTBSizeMiB},
	}
}

// file mirrors the TOML; pointers tell a key left out from a key set to its
// zero value, and int64 lets a negative or oversized number be reported in
// words rather than as a decoder overflow.
type file struct {
	Rootless *bool   `toml:"rootless"`
	Accel    *string `toml:"accel"`
	// BootTimeout is a Go duration ("90s", "2m").
	BootTimeout *string `toml:"boot_timeout"`
	Leases      *struct {
		First *int64 `toml:"first"`
		Count *int64 `toml:"count"`
	} `toml:"leases"`
	Container *struct {
		KernelParams *string `toml:"kernel_params"`
		TBSize       *int64  `toml:"tcg_tb_size"`
	} `toml:"container"`
}

const rootlessReason = "hutch never runs a VMM as root"

var lineBreaks = strings.NewReplacer("\r", `\r`, "\n", `\n`)

// Load reads the configuration at path. A missing file is the defaults;
// anything hutch does not understand is an error, so a typo never
// silently falls back to a default.
func Load(path string) (Config, error) {
	cfg := Defaults()
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return cfg, nil
	}
	if err != nil {
		return cfg, fmt.Errorf("%s: read config: %w", path, err)
	}
	var f file
	md, err := toml.Decode(string(b), &f)
	if err != nil {
		// The decoder's message can quote a raw line break from the file
		// (an invalid escape in a string); hutch's errors are one line.
		return cfg, fmt.Errorf("%s: %s", path, lineBreaks.Replace(err.Error()))
	}
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, len(und))
		for i, k := range und {
			keys[i] = strconv.Quote(k.String())
		}
		return cfg, fmt.Errorf("%s: unknown key %s; the keys are rootless, accel, boot_timeout, leases.first, leases.count, container.kernel_params and container.tcg_tb_size", path, strings.Join(keys, ", "))
	}
	if f.Rootless != nil && !*f.Rootless {
		return cfg, fmt.Errorf("rootless = false in %s is not supported: %s; remove the line or set rootless = true", path, rootlessReason)
	}
	if f.Accel != nil {
		mode, err := accel.ParseMode(*f.Accel)
		if err != nil || *f.Accel == "" {
			return cfg, fmt.Errorf("%s: accel = %q: set it to auto, kvm or tcg", path, lineBreaks.Replace(*f.Accel))
		}
		cfg.Accel = mode
	}
	if f.BootTimeout != nil {
		d, err := time.ParseDuration(*f.BootTimeout)
		if err != nil || d < time.Second || d > time.Hour {
			return cfg, fmt.Errorf("%s: boot_timeout = %q: give a duration from 1s to 1h, e.g. \"90s\"", path, lineBreaks.Replace(*f.BootTimeout))
		}
		cfg.BootTimeout = d
	}
	if f.Container != nil {
		if err := loadContainer(&cfg.Container, f.Container.KernelParams, f.Container.TBSize); err != nil {
			return cfg, fmt.Errorf("%s: [container] %w", path, err)
		}
	}
	first, count := int64(cfg.Leases.First), int64(cfg.Leases.Count)
	if f.Leases != nil {
		if f.Leases.First != nil {
			first = *f.Leases.First
		}
		if f.Leases.Count != nil {
			count = *f.Leases.Count
		}
	}
	if err := checkRange(first, count); err != nil {
		return cfg, fmt.Errorf("%s: [leases] %w", path, err)
	}
	cfg.Leases = LeaseRange{First: uint32(first), Count: uint32(count)}
	return cfg, nil
}

func loadContainer(c *Container, params *string, tbSize *int64) error {
	if params != nil {
		p := strings.TrimSpace(*params)
		if len(p) > maxKernelParams {
			return fmt.Errorf("kernel_params is %d bytes; the kernel's command line is bounded, give at most %d", len(p), maxKernelParams)
		}
		for i, r := range p {
			if r < ' ' || r > '~' {
				return fmt.Errorf("kernel_params holds %q at byte %d; give printable ASCII parameters separated by spaces", r, i)
			}
		}
		c.KernelParams = p
	}
	if tbSize != nil {
		if *tbSize < minTBSize || *tbSize > maxTBSize {
			return fmt.Errorf("tcg_tb_size = %d: give the code buffer in MiB, from %d to %d (default %d)", *tbSize, minTBSize, maxTBSize, DefaultTBSizeMiB)
		}
		c.TBSizeMiB = int(*tbSize)
	}
	return nil
}

func checkRange(first, count int64) error {
	switch {
	case first == 0:
		return fmt.Errorf("first = 0 includes uid 0 (root); set first to a positive id, e.g. first = %d", DefaultLeaseFirst)
	case first < 0:
		return fmt.Errorf("first = %d is negative; set first to a positive id, e.g. first = %d", first, DefaultLeaseFirst)
	case first > maxID:
		return fmt.Errorf("first = %d is beyond the highest uid %d; set first to at most %d", first, int64(maxID), int64(maxID))
	case count <= 0:
		return fmt.Errorf("count = %d leaves no ids to lease; set count to at least 1, e.g. count = %d", count, DefaultLeaseCount)
	case count > MaxLeaseCount:
		return fmt.Errorf("count = %d is more than the maximum %d; lower count", count, MaxLeaseCount)
	case first+count-1 > maxID:
		return fmt.Errorf("first = %d, count = %d ends past the highest uid %d; lower first or count so that first + count <= %d", first, count, int64(maxID), int64(maxID)+1)
	}
	return nil
}

// The annotations Kata honours for the same switch; an OCI bundle written
// for Kata carries one of them.
const (
	AnnotationRootless       = "io.katacontainers.config.hypervisor.rootless"
	AnnotationRootlessLegacy = "io.katacontainers.hypervisor.rootless"
)

// RootlessAnnotation reads Kata's rootless annotations from an OCI bundle.
// set reports whether either is present; a true value is what hutch does
// anyway, false is refused because hutch cannot honour it. Values parse as
// Kata parses them (strconv.ParseBool).
func RootlessAnnotation(annotations map[string]string) (set bool, err error) {
	for _, key := range []string{AnnotationRootless, AnnotationRootlessLegacy} {
		v, ok := annotations[key]
		if !ok {
			continue
		}
		set = true
		on, perr := strconv.ParseBool(v)
		if perr != nil {
			return set, fmt.Errorf("annotation %s = %q: not a boolean; set it to \"true\" or remove it", key, v)
		}
		if !on {
			return set, fmt.Errorf("annotation %s = %q is not supported: %s; remove the annotation or set it to \"true\"", key, v, rootlessReason)
		}
	}
	return set, nil
}
