// Package logfile holds a detached container's log: its output as records
// of the CRI log format that containerd and CRI-O write, one per line,
//
//	2026-11-30T07:00:00.123456789Z stdout F hello
//
// the time the line was read, its stream, F for a full line or P for a part
// of one that goes on in the next record of the stream (a line longer than
// MaxLine, or a last line with no newline), and the text without its
// newline. Records keep stdout apart from stderr and carry the times that
// `knit logs -t`, `--since` and `--until` need, and `grep` still reads it.
package logfile

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"sync"
	"time"
)

// Format names this format in a container's record.
const Format = "cri"

// MaxLine is the longest text one record holds, as Docker's 16 KiB.
const MaxLine = 16 << 10

// Streams.
const (
	Stdout = "stdout"
	Stderr = "stderr"
)

// TimeLayout is how records and `logs -t` write times: RFC 3339 with
// nanoseconds always nine digits (Docker's RFC3339NanoFixed), so that
// times sort as text.
const TimeLayout = "2006-01-02T15:04:05.000000000Z07:00"

// Record is one line, or one part of a line, of a stream.
type Record struct {
	Time    time.Time
	Stream  string
	Partial bool   // the line goes on in the stream's next record
	Text    []byte // without the newline
}

// Append appends r as a line of the file, its newline included.
func Append(dst []byte, r Record) []byte {
	dst = r.Time.UTC().AppendFormat(dst, TimeLayout)
	dst = append(dst, ' ')
	dst = append(dst, r.Stream...)
	if r.Partial {
		dst = append(dst, " P "...)
	} else {
		dst = append(dst, " F "...)
	}
	dst = append(dst, r.Text...)
	return append(dst, '\n')
}

// Parse reads one line of the file, without its newline; ok is false for a
// line that is not a record.
func Parse(line []byte) (r Record, ok bool) {
	ts, rest, ok1 := bytes.Cut(line, []byte{' '})
	stream, rest, ok2 := bytes.Cut(rest, []byte{' '})
	tag, text, ok3 := bytes.Cut(rest, []byte{' '})
	if !ok1 || !ok2 || !ok3 || len(tag) != 1 || (tag[0] != 'P' && tag[0] != 'F') {
		return r, false
	}
	t, err := time.Parse(time.RFC3339Nano, string(ts))
	if err != nil {
		return r, false
	}
	return Record{Time: t, Stream: string(stream), Partial: tag[0] == 'P', Text: text}, true
}

// Writer writes the records of several streams to one file, each with a
// single write, so that they never interleave.
type Writer struct {
	mu  sync.Mutex
	w   io.Writer
	buf []byte
	now func() time.Time
	// cut says that a write failed part-way: the next record starts on a
	// line of its own, so the part left is a line that is no record.
	cut bool
}

// NewWriter returns a Writer appending to w.
func NewWriter(w io.Writer) *Writer { return &Writer{w: w, now: time.Now} }

// Copy writes what stream's reader r gives, a record per line, until r
// ends, and returns the first write error: a record that cannot be
// written (a full disk) is dropped, and the next ones are tried, so that
// the container never blocks on a full pipe and its log goes on once the
// file can grow again.
func (w *Writer) Copy(stream string, r io.Reader) error {
	br := bufio.NewReaderSize(r, MaxLine)
	var werr error
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			full := line[len(line)-1] == '\n'
			if full {
				line = line[:len(line)-1]
			}
			if err := w.write(Record{Stream: stream, Partial: !full, Text: line}); werr == nil {
				werr = err
			}
		}
		switch {
		case err == nil, errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF):
			return werr
		default:
			return errors.Join(werr, err)
		}
	}
}

// write stamps r and writes it: the time is taken under the lock, so
// that the records of all streams are in the file in time order, which
// --until relies on.
func (w *Writer) write(r Record) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	r.Time = w.now()
	w.buf = w.buf[:0]
	if w.cut {
		w.buf = append(w.buf, '\n')
	}
	w.buf = Append(w.buf, r)
	n, err := w.w.Write(w.buf)
	w.cut = err != nil && n > 0 || w.cut && n == 0
	return err
}
