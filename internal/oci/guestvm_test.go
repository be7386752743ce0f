package oci

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// A new image prunes the cached ones no create has used for a while, and
// what a killed create left, but not one another create has just found,
// nor anything else in the directory.
func TestPruneInitrds(t *testing.T) {
	dir := t.TempDir()
	old, recent := time.Now().Add(-time.Hour), time.Now()
	files := map[string]time.Time{
		"agent-0000000000000001.initrd.gz": old,    // an older agent's
		"agent-0000000000000002.initrd.gz": recent, // in use by another create
		"agent-0000000000000003.initrd.gz": old,    // the one just written
		".initrd-12345":                    old,    // a killed create's
		".initrd-67890":                    recent, // being written
		"other":                            old,
	}
	for name, mtime := range files {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		os.Chtimes(p, mtime, mtime)
	}
	pruneInitrds(dir, filepath.Join(dir, "agent-0000000000000003.initrd.gz"), time.Now().Add(-initrdGrace))
	ents, _ := os.ReadDir(dir)
	var left []string
	for _, e := range ents {
		left = append(left, e.Name())
	}
	want := []string{".initrd-67890", "agent-0000000000000002.initrd.gz", "agent-0000000000000003.initrd.gz", "other"}
	if !slices.Equal(left, want) {
		t.Errorf("left %v, want %v", left, want)
	}
}
