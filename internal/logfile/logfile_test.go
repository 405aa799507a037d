package logfile

import (
	"bytes"
	"io"
	"strings"
	"testing"
	"time"
)

// fixedClock returns t, then t plus a second, and so on.
func fixedClock(t time.Time) func() time.Time {
	return func() time.Time { t = t.Add(time.Second); return t }
}

var t0 = time.Date(2026, 11, 30, 7, 0, 0, 5, time.UTC)

func TestCopyWritesRecords(t *testing.T) {
	var file bytes.Buffer
	w := NewWriter(&file)
	w.now = fixedClock(t0)
	long := strings.Repeat("x", MaxLine+10)
	if err := w.Copy(Stdout, strings.NewReader("hello\n\nwith space  \n"+long+"\nlast")); err != nil {
		t.Fatal(err)
	}
	want := "2026-11-30T07:00:01.000000005Z stdout F hello\n" +
		"2026-11-30T07:00:02.000000005Z stdout F \n" +
		"2026-11-30T07:00:03.000000005Z stdout F with space  \n" +
		"2026-11-30T07:00:04.000000005Z stdout P " + long[:MaxLine] + "\n" +
		"2026-11-30T07:00:05.000000005Z stdout F " + long[MaxLine:] + "\n" +
		"2026-11-30T07:00:06.000000005Z stdout P last\n"
	if got := file.String(); got != want {
		t.Errorf("file:\n%.300q\nwant\n%.300q", got, want)
	}
}

// Printing the records gives back each stream's bytes exactly.
func TestRoundTrip(t *testing.T) {
	var file bytes.Buffer
	w := NewWriter(&file)
	outText := "a\n" + strings.Repeat("y", 3*MaxLine) + "\n\nno newline"
	errText := "oops\n"
	if err := w.Copy(Stdout, strings.NewReader(outText)); err != nil {
		t.Fatal(err)
	}
	if err := w.Copy(Stderr, strings.NewReader(errText)); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	p := Printer{Stdout: &out, Stderr: &errOut}
	for line := range strings.Lines(file.String()) {
		if _, err := p.Print([]byte(strings.TrimSuffix(line, "\n"))); err != nil {
			t.Fatal(err)
		}
	}
	if out.String() != outText || errOut.String() != errText {
		t.Errorf("stdout %.80q, stderr %q", out.String(), errOut.String())
	}
}

func TestPrintTimesAndBounds(t *testing.T) {
	rec := func(sec int, stream string, partial bool, text string) []byte {
		b := Append(nil, Record{Time: t0.Add(time.Duration(sec) * time.Second), Stream: stream, Partial: partial, Text: []byte(text)})
		return b[:len(b)-1]
	}
	lines := [][]byte{
		rec(1, Stdout, false, "one"),
		rec(2, Stdout, true, "tw"), rec(3, Stderr, false, "err"), rec(3, Stdout, false, "o"),
		rec(4, Stdout, false, "three"),
		[]byte("not a record"),
		rec(9, Stdout, false, "late"),
	}
	var out, errOut bytes.Buffer
	p := Printer{Stdout: &out, Stderr: &errOut, Timestamps: true, Since: t0.Add(2 * time.Second), Until: t0.Add(5 * time.Second)}
	var past []bool
	for _, l := range lines {
		pa, err := p.Print(l)
		if err != nil {
			t.Fatal(err)
		}
		past = append(past, pa)
	}
	wantOut := "2026-11-30T07:00:02.000000005Z two\n2026-11-30T07:00:04.000000005Z three\nnot a record\n"
	if out.String() != wantOut || errOut.String() != "2026-11-30T07:00:03.000000005Z err\n" {
		t.Errorf("stdout %q\nstderr %q", out.String(), errOut.String())
	}
	if !past[len(past)-1] || past[len(past)-2] {
		t.Errorf("past = %v, want only the record after Until", past)
	}
}

// --details puts the (no) attributes and a space before each line, after
// its time, as docker logs --details; a partial record's rest gets none.
func TestPrintDetails(t *testing.T) {
	rec := func(stream string, partial bool, text string) []byte {
		b := Append(nil, Record{Time: t0, Stream: stream, Partial: partial, Text: []byte(text)})
		return b[:len(b)-1]
	}
	for _, tc := range []struct {
		timestamps bool
		want       string
	}{{false, " one\n tw-o\n"}, {true, "2026-11-30T07:00:00.000000005Z  one\n2026-11-30T07:00:00.000000005Z  tw-o\n"}} {
		var out bytes.Buffer
		p := Printer{Stdout: &out, Stderr: &out, Timestamps: tc.timestamps, Details: true}
		for _, l := range [][]byte{rec(Stdout, false, "one"), rec(Stdout, true, "tw-"), rec(Stdout, false, "o")} {
			if _, err := p.Print(l); err != nil {
				t.Fatal(err)
			}
		}
		if out.String() != tc.want {
			t.Errorf("timestamps %v: %q, want %q", tc.timestamps, out.String(), tc.want)
		}
	}
}

func TestParseRejects(t *testing.T) {
	for _, bad := range []string{"", "x", "2026-11-30T07:00:00Z stdout", "2026-11-30T07:00:00Z stdout X hi", "yesterday stdout F hi"} {
		if _, ok := Parse([]byte(bad)); ok {
			t.Errorf("Parse(%q) ok", bad)
		}
	}
	if r, ok := Parse([]byte("2026-11-30T07:00:00.5Z stderr F  two  spaces")); !ok || string(r.Text) != " two  spaces" || r.Stream != Stderr {
		t.Errorf("Parse = %+v, %v", r, ok)
	}
}

// A write error drops that record, not the reading: the container must
// not block on a full pipe, and the log goes on once the file can grow.
func TestCopyDrainsAfterWriteError(t *testing.T) {
	var file bytes.Buffer
	fw := &failingWriter{w: &file, fail: 1}
	w := NewWriter(fw)
	rest := strings.NewReader(strings.Repeat("z\n", 1000))
	if err := w.Copy(Stdout, io.MultiReader(strings.NewReader("a\nb\n"), rest)); err == nil {
		t.Error("no error from a failing file")
	}
	if rest.Len() > 0 {
		t.Errorf("%d bytes left unread after a write error", rest.Len())
	}
	if n := strings.Count(file.String(), "\n"); n != 1001 {
		t.Errorf("%d records written after one failed, want 1001", n)
	}
}

// failingWriter fails its first fail writes.
type failingWriter struct {
	w    io.Writer
	fail int
}

func (f *failingWriter) Write(b []byte) (int, error) {
	if f.fail > 0 {
		f.fail--
		return 0, io.ErrShortWrite
	}
	return f.w.Write(b)
}

// A write cut short (a disk that fills half-way through a record) leaves
// a line that is no record; the next record starts a line of its own.
func TestWriteCutShort(t *testing.T) {
	var file bytes.Buffer
	w := NewWriter(&halfWriter{w: &file})
	if err := w.Copy(Stdout, strings.NewReader("lost\nkept\n")); err == nil {
		t.Error("no error from a write cut short")
	}
	lines := strings.Split(strings.TrimSuffix(file.String(), "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("file: %q", file.String())
	}
	if _, ok := Parse([]byte(lines[0])); ok {
		t.Errorf("the cut record parses: %q", lines[0])
	}
	if r, ok := Parse([]byte(lines[1])); !ok || string(r.Text) != "kept" {
		t.Errorf("the next record: %q", lines[1])
	}
}

// halfWriter writes half of its first write, then fails it.
type halfWriter struct {
	w    io.Writer
	done bool
}

func (h *halfWriter) Write(b []byte) (int, error) {
	if !h.done {
		h.done = true
		n, _ := h.w.Write(b[:len(b)/2])
		return n, io.ErrShortWrite
	}
	return h.w.Write(b)
}
