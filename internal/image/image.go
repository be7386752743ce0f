// Package image is the local image cache: disk images imported once,
// kept as qcow2 under a name, and booted by that name through an overlay.
package image

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/hutch-vm/hutch/internal/disk"
	"github.com/hutch-vm/hutch/internal/store"
)

// InputError is a problem with what the user named; the CLI exits 2.
type InputError struct{ msg string }

func (e *InputError) Error() string { return e.msg }

// IsInput reports whether err comes from bad input.
func IsInput(err error) bool {
	var ie *InputError
	return errors.As(err, &ie)
}

var nameRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$`)

// NameFor is the cache name an imported file gets when none is given: its
// base name without the image extensions, e.g. debian-12.qcow2 -> debian-12.
func NameFor(file string) string {
	n := filepath.Base(file)
	for {
		ext := strings.ToLower(filepath.Ext(n))
		switch ext {
		case ".qcow2", ".img", ".raw", ".qcow", ".vmdk", ".vdi", ".vhd", ".vhdx":
			n = strings.TrimSuffix(n, filepath.Ext(n))
			continue
		}
		return n
	}
}

// ValidName checks an image name; names become file names.
func ValidName(name string) error {
	if !nameRE.MatchString(name) || strings.HasSuffix(name, ".") {
		return &InputError{fmt.Sprintf("invalid image name %q: use 1-63 letters, digits, '_', '.' or '-', starting with a letter or digit (give one with --name)", name)}
	}
	return nil
}

// Image is one cached image.
type Image struct {
	Name    string    `json:"name"`
	Path    string    `json:"path"`
	Size    int64     `json:"size"`
	Created time.Time `json:"created"`
}

// List returns the cached images, sorted by name.
func List(l store.Layout) ([]Image, error) {
	ents, err := os.ReadDir(l.Images())
	if errors.Is(err, os.ErrNotExist) {
		return []Image{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list images: %w", err)
	}
	imgs := []Image{}
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), ".qcow2")
		if !ok || ValidName(name) != nil || !e.Type().IsRegular() {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			continue // removed while listing
		}
		imgs = append(imgs, Image{Name: name, Path: l.Image(name), Size: fi.Size(), Created: fi.ModTime().UTC()})
	}
	sort.Slice(imgs, func(i, j int) bool { return imgs[i].Name < imgs[j].Name })
	return imgs, nil
}

// Lookup returns the file of the cached image name, if there is one.
func Lookup(l store.Layout, name string) (string, bool) {
	if ValidName(name) != nil {
		return "", false
	}
	p := l.Image(name)
	fi, err := os.Stat(p)
	return p, err == nil && fi.Mode().IsRegular()
}

// Import adds file to the cache as name: a standalone qcow2 is copied as
// it is, anything else (raw, or a qcow2 with a backing chain) is
// converted by qemu-img into one standalone qcow2. progress, when not nil,
// is a terminal that gets a progress bar. Nothing is left behind on error.
func Import(l store.Layout, file, name string, progress io.Writer) (Image, error) {
	if err := ValidName(name); err != nil {
		return Image{}, err
	}
	f, err := os.Open(file)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return Image{}, &InputError{fmt.Sprintf("image file %s does not exist: check the path", file)}
	case err != nil:
		return Image{}, &InputError{fmt.Sprintf("image file %s: cannot read it: fix its permissions", file)}
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return Image{}, &InputError{fmt.Sprintf("image file %s is not a regular file: give a qcow2 or raw image", file)}
	}
	chain, _, err := disk.Resolve(file, "", disk.Rules{SameOwner: os.Geteuid() == 0})
	if err != nil {
		return Image{}, &InputError{err.Error()}
	}
	dst := l.Image(name)
	if _, err := os.Stat(dst); err == nil {
		return Image{}, &InputError{fmt.Sprintf("an image named %q already exists: choose another --name, or remove it with hutch image rm %s", name, name)}
	}
	if err := os.MkdirAll(l.Images(), 0o700); err != nil {
		return Image{}, fmt.Errorf("create image cache: %w", err)
	}
	tmp, err := os.CreateTemp(l.Images(), ".import-*")
	if err != nil {
		return Image{}, fmt.Errorf("create image in cache: %w", err)
	}
	tmpPath := tmp.Name()
	ok := false
	defer func() {
		if !ok {
			os.Remove(tmpPath)
		}
	}()
	if len(chain) == 1 && chain[0].Format == "qcow2" {
		err = copyWithBar(tmp, f, progress, "copy "+filepath.Base(file))
		if cerr := tmp.Close(); err == nil {
			err = cerr
		}
	} else {
		tmp.Close()
		err = convert(file, chain[0].Format, tmpPath, progress)
	}
	if err != nil {
		return Image{}, fmt.Errorf("import %s: %w", file, err)
	}
	// Link, not rename: an image made meanwhile under the same name wins
	// and is never overwritten.
	if err := os.Link(tmpPath, dst); err != nil {
		if errors.Is(err, os.ErrExist) {
			return Image{}, &InputError{fmt.Sprintf("an image named %q already exists: choose another --name", name)}
		}
		return Image{}, fmt.Errorf("import %s: %w", file, err)
	}
	ok = true
	os.Remove(tmpPath)
	fi, err := os.Stat(dst)
	if err != nil {
		return Image{}, fmt.Errorf("import %s: %w", file, err)
	}
	return Image{Name: name, Path: dst, Size: fi.Size(), Created: fi.ModTime().UTC()}, nil
}

// Remove deletes a cached image. VMs booted from it keep running but
// cannot be booted again.
func Remove(l store.Layout, name string) error {
	if err := ValidName(name); err != nil {
		return err
	}
	if err := os.Remove(l.Image(name)); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return &InputError{fmt.Sprintf("no such image: %s (see hutch images)", name)}
		}
		return fmt.Errorf("remove image %s: %w", name, err)
	}
	return nil
}

// convert writes src as a standalone qcow2 at dst, following any backing
// chain. qemu-img's own progress (-p) drives the bar.
func convert(src, format, dst string, progress io.Writer) error {
	args := []string{"convert", "-f", format, "-O", "qcow2"}
	if progress != nil {
		args = append(args, "-p")
	}
	cmd := exec.Command(disk.Tool, append(args, src, dst)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("run %s: %w", disk.Tool, err)
	}
	// qemu-img -p writes "    (12.34/100%)\r" lines.
	sc := bufio.NewScanner(out)
	sc.Split(splitCR)
	for sc.Scan() {
		t := strings.Trim(strings.TrimSpace(sc.Text()), "()%")
		if pct, ok := strings.CutSuffix(t, "/100"); ok && progress != nil {
			if v, err := strconv.ParseFloat(pct, 64); err == nil {
				drawBar(progress, "convert "+filepath.Base(src), v/100)
			}
		}
	}
	if err := cmd.Wait(); err != nil {
		return fmt.Errorf("%s convert: %s", disk.Tool, strings.TrimSpace(stderr.String()))
	}
	if progress != nil {
		drawBar(progress, "convert "+filepath.Base(src), 1)
		fmt.Fprintln(progress)
	}
	return nil
}

func splitCR(data []byte, atEOF bool) (int, []byte, error) {
	for i, b := range data {
		if b == '\r' || b == '\n' {
			return i + 1, data[:i], nil
		}
	}
	if atEOF && len(data) > 0 {
		return len(data), data, nil
	}
	return 0, nil, nil
}

// copyWithBar copies src to dst, drawing a bar on progress if given.
func copyWithBar(dst io.Writer, src *os.File, progress io.Writer, label string) error {
	if progress == nil {
		_, err := io.Copy(dst, src)
		return err
	}
	fi, err := src.Stat()
	if err != nil {
		return err
	}
	total := fi.Size()
	buf := make([]byte, 1<<20)
	var done int64
	last := time.Time{}
	for {
		n, rerr := src.Read(buf)
		if n > 0 {
			if _, err := dst.Write(buf[:n]); err != nil {
				return err
			}
			done += int64(n)
			if time.Since(last) > 100*time.Millisecond && total > 0 {
				drawBar(progress, label, float64(done)/float64(total))
				last = time.Now()
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return rerr
		}
	}
	drawBar(progress, label, 1)
	fmt.Fprintln(progress)
	return nil
}

// Bar renders a progress line: label, a 30-cell bar, a percentage.
func Bar(label string, frac float64) string {
	frac = max(0, min(1, frac))
	const width = 30
	full := int(frac * width)
	return fmt.Sprintf("%s [%s%s] %3.0f%%", label, strings.Repeat("=", full), strings.Repeat(" ", width-full), frac*100)
}

func drawBar(w io.Writer, label string, frac float64) {
	fmt.Fprintf(w, "\r%s", Bar(label, frac))
}
