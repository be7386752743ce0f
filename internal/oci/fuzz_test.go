package oci

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzLoadBundle: any config.json either loads into a bundle whose
// process can run, or is refused with a one-line error; never a panic.
func FuzzLoadBundle(f *testing.F) {
	f.Add(`{"ociVersion":"1.0.2","root":{"path":"rootfs"},"process":{"args":["sh"],"cwd":"/"}}`)
	f.Add(`{"ociVersion":"1.2.0","root":{"path":"rootfs","readonly":true},"process":{"terminal":true,"user":{"uid":1,"gid":1,"additionalGids":[0]},"args":["a"],"cwd":"/x","rlimits":[{"type":"RLIMIT_NOFILE","hard":1,"soft":1}]},"mounts":[{"destination":"/proc","type":"proc"}],"linux":{"namespaces":[{"type":"network","path":"/x"}],"resources":{"memory":{"limit":-1},"cpu":{"quota":-5,"period":0}}}}`)
	f.Add(`{"ociVersion":"2.0.0"}`)
	f.Add(`{"ociVersion":"1.0.0","process":null}`)
	f.Add(`[]`)
	f.Fuzz(func(t *testing.T, config string) {
		dir := t.TempDir()
		os.Mkdir(filepath.Join(dir, "rootfs"), 0o755)
		os.WriteFile(filepath.Join(dir, ConfigFile), []byte(config), 0o644)
		b, err := LoadBundle(dir)
		if err != nil {
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("multi-line error %q", err)
			}
			return
		}
		if b.Spec.Process == nil || len(b.Spec.Process.Args) == 0 || !filepath.IsAbs(b.Spec.Process.Cwd) {
			t.Fatalf("accepted a bundle with no runnable process: %+v", b.Spec.Process)
		}
		mem, cpus := machineSize(b.Spec)
		if mem < 128 || cpus < 1 || cpus > 255 {
			t.Fatalf("machineSize = %d MiB, %d CPUs", mem, cpus)
		}
		ProcessOf(b.Spec.Process)
	})
}
