package cli

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"text/template"
	"time"

	"github.com/knit-dev/knit/internal/errdefs"
)

// templateFuncs are the helpers Docker's --format templates offer.
var templateFuncs = template.FuncMap{
	// As Docker's: "->" in PORTS stays "->", not "\u003e".
	"json": func(v any) (string, error) {
		var b strings.Builder
		enc := json.NewEncoder(&b)
		enc.SetEscapeHTML(false)
		err := enc.Encode(v)
		return strings.TrimSuffix(b.String(), "\n"), err
	},
	"join":  strings.Join,
	"split": strings.Split,
	"lower": strings.ToLower,
	"upper": strings.ToUpper,
	"title": func(s string) string {
		if s == "" {
			return s
		}
		return strings.ToUpper(s[:1]) + s[1:]
	},
	"truncate": func(s string, n int) string {
		if len(s) > n {
			return s[:n]
		}
		return s
	},
	"pad": func(s string, prefix, suffix int) string {
		if s == "" {
			return s
		}
		return strings.Repeat(" ", prefix) + s + strings.Repeat(" ", suffix)
	},
}

// parseFormat compiles a --format template. A "table" prefix asks for a
// header row and aligned columns, as in Docker: the caller executes the
// template once on a row whose fields hold the column titles. A bare
// "table" means the caller's default table.
func parseFormat(format string) (tmpl *template.Template, table bool, err error) {
	// \t and \n written literally are a tab and a newline in a list's
	// format, as Docker's (not in inspect's, nor there).
	tmpl, table, err = compileFormat(strings.NewReplacer(`\t`, "\t", `\n`, "\n").Replace(format))
	if err != nil {
		return nil, false, errdefs.Invalid("invalid --format template: %w", err)
	}
	return tmpl, table, nil
}

// listFormat compiles a list command's --format: "" and "table" are its
// default, "json" an object per line, anything else a template, as
// Docker's list commands read them.
func listFormat(format, defaultFormat string) (tmpl *template.Template, table bool, err error) {
	switch format {
	case "", "table":
		format = defaultFormat
	case "json":
		format = "{{json .}}"
	}
	return parseFormat(format)
}

func compileFormat(format string) (tmpl *template.Template, table bool, err error) {
	body, table := strings.CutPrefix(format, "table")
	if !table || (body != "" && body[0] != ' ' && body[0] != '\t') {
		body, table = format, false
	}
	body = strings.TrimLeft(body, " \t")
	if !strings.HasSuffix(body, "\n") {
		body += "\n"
	}
	// A missing map key prints "<no value>", as Docker's templates do
	// ({{.Labels.owner}} of a network without that label).
	tmpl, err = template.New("format").Funcs(templateFuncs).Parse(body)
	return tmpl, table, err
}

// parseInspectFormat compiles inspect's --format before anything is looked
// up: nil for "" (indented JSON) and "json" (one compact line), as Docker's
// CLI; a template that does not parse exits 64, as there.
func parseInspectFormat(format string) (*template.Template, error) {
	if format == "" || format == "json" {
		return nil, nil
	}
	tmpl, _, err := compileFormat(format)
	if err != nil {
		return nil, statusError{64, fmt.Errorf("template parsing error: %w", err)}
	}
	return tmpl, nil
}

// writeInspect prints the objects inspect found. A template that fails on
// one object is reported once the others are printed; lookupErrs, the
// references not found, come first in the error, as in Docker.
func writeInspect(w io.Writer, views []any, format string, tmpl *template.Template, lookupErrs []error) error {
	if tmpl == nil {
		var b []byte
		var err error
		if format == "json" {
			b, err = json.Marshal(views)
		} else {
			b, err = json.MarshalIndent(views, "", "    ")
		}
		if err != nil {
			return err
		}
		fmt.Fprintln(w, string(b))
		return errors.Join(lookupErrs...)
	}
	var buf bytes.Buffer
	for _, v := range views {
		var one bytes.Buffer
		if err := tmpl.Execute(&one, v); err != nil {
			lookupErrs = append(lookupErrs, fmt.Errorf("template parsing error: %w", err))
			continue
		}
		buf.Write(one.Bytes())
	}
	if buf.Len() == 0 {
		buf.WriteByte('\n') // as Docker's: nothing printed is an empty line
	}
	_, _ = w.Write(buf.Bytes())
	return errors.Join(lookupErrs...)
}

// newTable lays columns out as Docker's tables: at least 10 wide, 3 apart.
func newTable(w interface{ Write([]byte) (int, error) }) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 10, 1, 3, ' ', 0)
}

// writeRows writes rows through tmpl: for a table, aligned, after the
// header row; any other format as the template writes it, its tabs kept
// (for cut -f, say), as Docker's commands do.
func writeRows[R any](w io.Writer, tmpl *template.Template, table bool, header R, rows []R) error {
	var tw *tabwriter.Writer
	if table {
		tw = newTable(w)
		w = tw
		rows = append([]R{header}, rows...)
	}
	for _, r := range rows {
		if err := tmpl.Execute(w, r); err != nil {
			return fmt.Errorf("--format: %w", err)
		}
	}
	if tw != nil {
		return tw.Flush()
	}
	return nil
}

// humanDuration renders d as Docker does ("5 seconds", "About a minute").
func humanDuration(d time.Duration) string {
	s := int(d.Seconds())
	switch {
	case s < 1:
		return "Less than a second"
	case s == 1:
		return "1 second"
	case s < 60:
		return fmt.Sprintf("%d seconds", s)
	case d.Minutes() < 2:
		return "About a minute"
	case d.Minutes() < 60:
		return fmt.Sprintf("%d minutes", int(d.Minutes()))
	case d.Hours() < 2:
		return "About an hour"
	case d.Hours() < 48:
		return fmt.Sprintf("%d hours", int(d.Hours()))
	case d.Hours() < 24*14:
		return fmt.Sprintf("%d days", int(d.Hours()/24))
	case d.Hours() < 24*60:
		return fmt.Sprintf("%d weeks", int(d.Hours()/24/7))
	case d.Hours() < 24*365*2:
		return fmt.Sprintf("%d months", int(d.Hours()/24/30))
	}
	return fmt.Sprintf("%d years", int(d.Hours()/24/365))
}
