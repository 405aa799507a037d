package cli

import (
	"encoding/json"
	"fmt"
	"strings"
	"text/tabwriter"
	"text/template"
	"time"

	"github.com/knit-dev/knit/internal/errdefs"
)

// templateFuncs are the helpers Docker's --format templates offer.
var templateFuncs = template.FuncMap{
	"json": func(v any) (string, error) {
		b, err := json.Marshal(v)
		return string(b), err
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
}

// parseFormat compiles a --format template. A "table " prefix prints a header
// row and aligns columns, as in Docker; headers maps field names to titles.
func parseFormat(format string, headers map[string]string) (tmpl *template.Template, header string, err error) {
	body, table := strings.CutPrefix(format, "table ")
	if !strings.HasSuffix(body, "\n") {
		body += "\n"
	}
	body = strings.ReplaceAll(body, `\t`, "\t")
	tmpl, err = template.New("format").Funcs(templateFuncs).Option("missingkey=error").Parse(body)
	if err != nil {
		return nil, "", errdefs.Invalid("invalid --format template: %v", err)
	}
	if table {
		header = body
		for field, title := range headers {
			header = strings.ReplaceAll(header, "{{."+field+"}}", title)
		}
	}
	return tmpl, header, nil
}

func newTable(w interface{ Write([]byte) (int, error) }) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 0, 3, ' ', 0)
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
