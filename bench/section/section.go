// Package section rewrites one marked section of a benchmark's results
// page, leaving the rest of the page as it is.
package section

import (
	"os"
	"strings"
)

// Write puts md (which starts with begin and ends with end) in place of
// the text from begin to end in the file at path, or appends it when the
// file has no such section yet. The file is replaced by rename.
func Write(path, begin, end, md string) error {
	old, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	s := string(old)
	i, j := strings.Index(s, begin), strings.Index(s, end)
	if i >= 0 && j > i {
		s = s[:i] + strings.TrimSuffix(md, "\n") + s[j+len(end):]
	} else {
		s = strings.TrimRight(s, "\n") + "\n\n" + md
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(s), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
