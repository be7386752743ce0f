package vm

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hutch-vm/hutch/internal/store"
)

// A VM whose creator still runs is starting: rm leaves it, rm -f does not.
func TestRemoveRefusesAStartingVM(t *testing.T) {
	dir := t.TempDir()
	l := store.Layout{DataRoot: filepath.Join(dir, "data"), RunRoot: filepath.Join(dir, "run")}
	os.MkdirAll(l.VMsDir(), 0o700)
	e := &Engine{Layout: l}
	self, err := store.Self()
	if err != nil {
		t.Fatal(err)
	}
	rec := Record{Name: "web", Status: Status{State: StateCreated, Creator: self}}
	if err := store.Create(l, "web", rec, func(string) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if err := e.Remove("web", false); err == nil || !strings.Contains(err.Error(), `vm "web" is starting`) {
		t.Fatalf("rm of a starting vm: %v", err)
	}
	if _, err := e.Get("web"); err != nil {
		t.Fatalf("the starting vm is gone: %v", err)
	}
	if err := e.Remove("web", true); err != nil {
		t.Fatalf("rm -f of a starting vm: %v", err)
	}
	if _, err := e.Get("web"); err == nil {
		t.Fatal("rm -f left the vm")
	}
}

// An unreadable record: listed as broken, named by Get, removed by rm -f.
func TestBrokenRecordListedAndRemoved(t *testing.T) {
	dir := t.TempDir()
	l := store.Layout{DataRoot: filepath.Join(dir, "data"), RunRoot: filepath.Join(dir, "run")}
	os.MkdirAll(l.VMsDir(), 0o700)
	e := &Engine{Layout: l}
	for _, n := range []string{"good", "bad"} {
		if err := store.Create(l, n, Record{Name: n, Status: Status{State: StateStopped}}, func(string) error { return nil }); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(l.VM("bad").Record(), []byte("{"), 0o600)
	vs, err := e.List(true)
	if err != nil || len(vs) != 2 || vs[0].Name != "bad" || vs[0].State != StateBroken || vs[1].State != StateStopped {
		t.Fatalf("List = %+v, %v", vs, err)
	}
	if _, err := e.Get("bad"); err == nil || !strings.Contains(err.Error(), "hutch rm -f bad") {
		t.Errorf("Get of a broken vm: %v", err)
	}
	if err := e.Remove("bad", false); err == nil {
		t.Error("rm without -f removed a broken vm")
	}
	if err := e.Remove("bad", true); err != nil {
		t.Fatalf("rm -f of a broken vm: %v", err)
	}
	if vs, _ := e.List(true); len(vs) != 1 {
		t.Errorf("after rm -f: %+v", vs)
	}
}
