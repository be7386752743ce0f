package cloudinit

import (
	"errors"
	"strings"
	"testing"
)

// FuzzParseUserData: any input is accepted as a mapping or refused with a
// one-line UserDataError, never a panic; what is accepted merges with a
// login and renders to user-data that parses again.
func FuzzParseUserData(f *testing.F) {
	for _, s := range []string{
		"#cloud-config\nruncmd:\n  - [touch, /x]\n",
		"#cloud-config\nusers:\n  - default\n  - name: alice\n",
		"#cloud-config\nruncmd: [\n",
		"#!/bin/sh\necho hi\n",
		"#cloud-config\n- a\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		doc, err := ParseUserData(data)
		if err != nil {
			var ue *UserDataError
			if !errors.As(err, &ue) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("error %q is not a one-line UserDataError", err)
			}
			return
		}
		merged, err := MergeLogin(doc, Login{User: "u", PublicKey: "ssh-ed25519 K"})
		if err != nil {
			return
		}
		out, err := UserData(merged)
		if err != nil {
			return
		}
		if _, err := ParseUserData(out); err != nil {
			t.Fatalf("rendered user-data does not parse: %v\n%s", err, out)
		}
	})
}
