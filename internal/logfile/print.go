package logfile

import (
	"io"
	"time"
)

// Printer writes records back as the container wrote them: stdout's to
// Stdout, stderr's to Stderr, as `docker logs` does.
type Printer struct {
	Stdout, Stderr io.Writer
	// Since and Until keep the records written in [Since, Until]; zero
	// is no bound.
	Since, Until time.Time
	// Timestamps starts every line with its time (logs -t).
	Timestamps bool
	// Details puts the line's attributes and a space before it, after
	// its time (logs --details); the records have none.
	Details bool

	open map[string]bool // streams whose last record printed was partial
	buf  []byte
}

// Print writes the record on line, a line of the file without its
// newline; a line that is not a record is written to Stdout as it is. It
// reports a record past Until: the ones after it are too.
func (p *Printer) Print(line []byte) (past bool, err error) {
	r, ok := Parse(line)
	if !ok {
		_, err := p.Stdout.Write(append(append(p.buf[:0], line...), '\n'))
		return false, err
	}
	if !p.Until.IsZero() && r.Time.After(p.Until) {
		return true, nil
	}
	if !p.Since.IsZero() && r.Time.Before(p.Since) {
		return false, nil
	}
	w := p.Stdout
	if r.Stream == Stderr {
		w = p.Stderr
	}
	if p.open == nil {
		p.open = map[string]bool{}
	}
	p.buf = p.buf[:0]
	if p.Timestamps && !p.open[r.Stream] {
		p.buf = r.Time.UTC().AppendFormat(p.buf, TimeLayout)
		p.buf = append(p.buf, ' ')
	}
	if p.Details && !p.open[r.Stream] {
		p.buf = append(p.buf, ' ') // no attributes, then the space
	}
	p.buf = append(p.buf, r.Text...)
	if !r.Partial {
		p.buf = append(p.buf, '\n')
	}
	p.open[r.Stream] = r.Partial
	_, err = w.Write(p.buf)
	return false, err
}
