package runner

import (
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

func TestOpenPtyRawWinsize(t *testing.T) {
	master, slave, err := openPty()
	if err != nil {
		t.Fatal(err)
	}
	defer master.Close()
	defer slave.Close()
	if !isTerminal(slave) || isTerminal(nil) {
		t.Fatal("isTerminal wrong")
	}
	restore, err := makeRaw(slave)
	if err != nil {
		t.Fatal(err)
	}
	tio, _ := unix.IoctlGetTermios(int(slave.Fd()), unix.TCGETS)
	if tio.Lflag&(unix.ECHO|unix.ICANON|unix.ISIG) != 0 || tio.Oflag&unix.OPOST != 0 {
		t.Errorf("not raw: lflag %#x oflag %#x", tio.Lflag, tio.Oflag)
	}
	restore()
	tio, _ = unix.IoctlGetTermios(int(slave.Fd()), unix.TCGETS)
	if tio.Lflag&unix.ICANON == 0 {
		t.Error("restore did not bring back canonical mode")
	}

	// Window size: from one terminal to another pty.
	m2, s2, err := openPty()
	if err != nil {
		t.Fatal(err)
	}
	defer m2.Close()
	defer s2.Close()
	want := &unix.Winsize{Row: 33, Col: 101}
	if err := unix.IoctlSetWinsize(int(master.Fd()), unix.TIOCSWINSZ, want); err != nil {
		t.Fatal(err)
	}
	copyWinsize(slave, m2)
	got, _ := unix.IoctlGetWinsize(int(s2.Fd()), unix.TIOCGWINSZ)
	if got.Row != want.Row || got.Col != want.Col {
		t.Errorf("winsize = %dx%d; want %dx%d", got.Row, got.Col, want.Row, want.Col)
	}
	if _, err := makeRaw(s2); err != nil {
		t.Fatal(err)
	}
	devNull, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer devNull.Close()
	if _, err := makeRaw(devNull); err == nil {
		t.Error("makeRaw of a non-terminal: no error")
	}
}
