package identity

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestVMMGroups(t *testing.T) {
	chr := os.ModeDevice | os.ModeCharDevice
	kvm := func(mode os.FileMode, gid uint32) DeviceInfo {
		return DeviceInfo{Path: "/dev/kvm", Mode: chr | mode, UID: 0, GID: gid, Exists: true}
	}
	tests := []struct {
		name   string
		useKVM bool
		dev    DeviceInfo
		want   []uint32
		errHas []string
	}{
		{name: "no kvm", useKVM: false, dev: kvm(0o660, 107), want: []uint32{}},
		{name: "no kvm, device missing", useKVM: false, dev: DeviceInfo{Path: "/dev/kvm"}, want: []uint32{}},
		{name: "no kvm, root-only device", useKVM: false, dev: kvm(0o600, 0), want: []uint32{}},
		{name: "kvm group rw", useKVM: true, dev: kvm(0o660, 107), want: []uint32{107}},
		{name: "kvm group rw, owner none", useKVM: true, dev: kvm(0o060, 107), want: []uint32{107}},
		{name: "world rw needs no group", useKVM: true, dev: kvm(0o666, 107), want: []uint32{}},
		{name: "world rw, root group", useKVM: true, dev: kvm(0o666, 0), want: []uint32{}},
		{
			name: "root group only", useKVM: true, dev: kvm(0o660, 0),
			errHas: []string{"group 0", "never gets root's group", "chgrp kvm /dev/kvm && chmod 0660 /dev/kvm"},
		},
		{
			name: "root-only device", useKVM: true, dev: kvm(0o600, 0),
			errHas: []string{"mode 0600", "chgrp kvm /dev/kvm && chmod 0660 /dev/kvm"},
		},
		{
			name: "group read-only", useKVM: true, dev: kvm(0o640, 107),
			errHas: []string{"mode 0640, group 107", "chmod 0660 /dev/kvm"},
		},
		{
			name: "world read-only", useKVM: true, dev: kvm(0o604, 107),
			errHas: []string{"cannot be opened read-write"},
		},
		{
			name: "missing", useKVM: true, dev: DeviceInfo{Path: "/dev/kvm"},
			errHas: []string{"/dev/kvm does not exist"},
		},
		{
			name: "not a device", useKVM: true, dev: DeviceInfo{Path: "/tmp/kvm", Mode: 0o666, Exists: true},
			errHas: []string{"/tmp/kvm is not a character device"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := VMMGroups(tt.useKVM, tt.dev)
			if tt.errHas != nil {
				if err == nil {
					t.Fatalf("VMMGroups = %v, want an error", got)
				}
				for _, want := range tt.errHas {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("error %q lacks %q", err, want)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("VMMGroups: %v", err)
			}
			if got == nil || !slices.Equal(got, tt.want) {
				t.Fatalf("VMMGroups = %#v, want %#v", got, tt.want)
			}
			if slices.Contains(got, 0) {
				t.Fatalf("VMMGroups = %v includes root's group", got)
			}
		})
	}
}

func TestStatDevice(t *testing.T) {
	dev, err := StatDevice("/dev/null")
	if err != nil {
		t.Fatal(err)
	}
	if !dev.Exists || dev.Path != "/dev/null" || dev.Mode&os.ModeCharDevice == 0 || dev.Mode.Perm() != 0o666 {
		t.Fatalf("StatDevice(/dev/null) = %+v", dev)
	}
	// /dev/null is world-rw: a VMM needs no group for such a device.
	if g, err := VMMGroups(true, dev); err != nil || len(g) != 0 {
		t.Fatalf("VMMGroups(/dev/null) = %v, %v", g, err)
	}

	missing := filepath.Join(t.TempDir(), "kvm")
	dev, err = StatDevice(missing)
	if err != nil || dev.Exists || dev.Path != missing {
		t.Fatalf("StatDevice(missing) = %+v, %v", dev, err)
	}

	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o640); err != nil {
		t.Fatal(err)
	}
	dev, err = StatDevice(file)
	if err != nil || !dev.Exists || dev.UID != uint32(os.Getuid()) || dev.Mode.Perm() != 0o640 {
		t.Fatalf("StatDevice(file) = %+v, %v", dev, err)
	}
}
