package main

import (
	"encoding/xml"
	"strings"
	"testing"
)

func TestDomainXMLCarriesHutchsNIC(t *testing.T) {
	raw := strings.Fields("qemu-system-x86_64 -machine q35 -serial file:SERIAL " +
		"-netdev user,id=n0,hostfwd=tcp:127.0.0.1:PORT-:80 -device virtio-net-pci,netdev=n0,mac=52:54:00:00:00:01")
	netdev, device, err := netArgs(raw)
	if err != nil {
		t.Fatal(err)
	}
	if netdev != "user,id=n0,hostfwd=tcp:127.0.0.1:PORT-:80" || device != "virtio-net-pci,netdev=n0,mac=52:54:00:00:00:01" {
		t.Fatalf("netArgs = %q, %q", netdev, device)
	}
	x := domainXML("vm", 256, "/k/vmlinuz", "/k/initrd.gz", "console=ttyS0 a='b'&c", "/s/serial.log", netdev, device)
	var dom struct {
		Type    string `xml:"type,attr"`
		Memory  int    `xml:"memory"`
		Cmdline string `xml:"os>cmdline"`
		Args    []struct {
			Value string `xml:"value,attr"`
		} `xml:"commandline>arg"`
	}
	if err := xml.Unmarshal([]byte(x), &dom); err != nil {
		t.Fatalf("domain XML does not parse: %v\n%s", err, x)
	}
	if dom.Type != "qemu" || dom.Memory != 256 || dom.Cmdline != "console=ttyS0 a='b'&c" {
		t.Errorf("domain: type %q, memory %d, cmdline %q", dom.Type, dom.Memory, dom.Cmdline)
	}
	var args []string
	for _, a := range dom.Args {
		args = append(args, a.Value)
	}
	if want := []string{"-netdev", netdev, "-device", device}; strings.Join(args, " ") != strings.Join(want, " ") {
		t.Errorf("qemu:commandline = %q, want %q", args, want)
	}
}

func TestNetArgsWantsANIC(t *testing.T) {
	if _, _, err := netArgs(strings.Fields("qemu -machine q35")); err == nil {
		t.Error("no error for a command line without a NIC")
	}
}
