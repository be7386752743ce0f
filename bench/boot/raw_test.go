package main

import (
	"slices"
	"strings"
	"testing"
)

func TestRawFromHutch(t *testing.T) {
	hutch := strings.Fields("/usr/bin/qemu-system-x86_64 -nodefaults -no-user-config -name hutch -machine q35 " +
		"-accel tcg -smp 1 -m 256M -display none -sandbox on,obsolete=deny -chardev socket,id=ser0,fd=3 " +
		"-serial chardev:ser0 -chardev socket,id=qmp,fd=4,server=on,wait=off -mon chardev=qmp,mode=control " +
		"-kernel /proc/self/fd/5 -initrd /proc/self/fd/6 -append console=ttyS0 " +
		"-netdev user,id=n0,hostfwd=tcp:127.0.0.1:18400-:80 -device virtio-net-pci,netdev=n0,mac=52:54:00:00:00:01")
	tmpl, err := rawFromHutch(hutch, "/k/vmlinuz", "/k/initrd.gz")
	if err != nil {
		t.Fatal(err)
	}
	b := &bench{rawTemplate: tmpl}
	got := b.rawArgv("9000", "/tmp/s.log")
	want := strings.Fields("qemu-system-x86_64 -nodefaults -machine q35 -accel tcg -smp 1 -m 256M -display none " +
		"-serial file:/tmp/s.log -kernel /k/vmlinuz -initrd /k/initrd.gz -append console=ttyS0 " +
		"-netdev user,id=n0,hostfwd=tcp:127.0.0.1:9000-:80 -device virtio-net-pci,netdev=n0,mac=52:54:00:00:00:01")
	if !slices.Equal(got, want) {
		t.Errorf("raw argv\n got %q\nwant %q", got, want)
	}
}

func TestRawFromHutchRefusesDescriptors(t *testing.T) {
	for _, extra := range [][]string{
		{"-add-fd", "fd=7,set=1"},
		{"-chardev", "socket,id=x,fd=9", "-device", "virtserialport,chardev=x"},
	} {
		argv := append(strings.Fields("qemu -chardev socket,id=ser0,fd=3 -serial chardev:ser0 "+
			"-netdev user,id=n0,hostfwd=tcp:127.0.0.1:1-:80"), extra...)
		if _, err := rawFromHutch(argv, "k", "i"); err == nil {
			t.Errorf("%q: no error", extra)
		}
	}
}
