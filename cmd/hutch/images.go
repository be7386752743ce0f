package main

import (
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/hutch-vm/hutch/internal/image"
)

func imagesCmd() *cobra.Command {
	var format string
	c := &cobra.Command{
		Use:   "images",
		Short: "List the images in your local cache",
		Args:  args(cobra.NoArgs),
		RunE: func(c *cobra.Command, a []string) error {
			if err := checkFormat(format); err != nil {
				return err
			}
			e, err := newEngine()
			if err != nil {
				return err
			}
			imgs, err := image.List(e.Layout)
			if err != nil {
				return err
			}
			if format == "json" {
				return printJSON(imgs)
			}
			w := tabwriter.NewWriter(os.Stdout, 0, 4, 3, ' ', 0)
			fmt.Fprintln(w, "NAME\tSIZE\tIMPORTED")
			for _, i := range imgs {
				fmt.Fprintf(w, "%s\t%dM\t%s\n", i.Name, i.Size>>20, i.Created.Local().Format(time.DateTime))
			}
			return w.Flush()
		},
	}
	c.Flags().StringVar(&format, "format", "table", "output format: table or json")
	return c
}

func imageCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "image",
		Short: "Manage the local image cache",
		Args:  args(cobra.NoArgs),
	}
	var name string
	imp := &cobra.Command{
		Use:   "import FILE",
		Short: "Add a qcow2 or raw image to the cache (converted to qcow2 as needed); boot it by name",
		Args:  args(cobra.ExactArgs(1)),
		RunE: func(c *cobra.Command, a []string) error {
			if name == "" {
				name = image.NameFor(a[0])
			}
			e, err := newEngine()
			if err != nil {
				return err
			}
			var progress io.Writer
			if term.IsTerminal(int(os.Stderr.Fd())) {
				progress = os.Stderr
			}
			img, err := image.Import(e.Layout, a[0], name, progress)
			if err != nil {
				return err
			}
			fmt.Println(img.Name)
			return nil
		},
	}
	imp.Flags().StringVar(&name, "name", "", "name in the cache (default: the file's name without extension)")
	rm := &cobra.Command{
		Use:   "rm NAME...",
		Short: "Remove images from the cache",
		Args:  args(cobra.MinimumNArgs(1)),
		RunE: func(c *cobra.Command, a []string) error {
			e, err := newEngine()
			if err != nil {
				return err
			}
			for _, n := range a {
				if err := e.RemoveImage(n); err != nil {
					return err
				}
			}
			return nil
		},
	}
	c.AddCommand(imp, rm)
	return c
}
