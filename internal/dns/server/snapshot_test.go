package server

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestSaveLoad(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "dns")
	s, err := Load(dir)
	if err != nil || s == nil || len(s.Networks) != 0 {
		t.Fatalf("Load of a missing snapshot = %+v, %v; want an empty one", s, err)
	}
	want := testSnapshot()
	want.Port = 5353
	if err := Save(dir, want); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("dir: %v, %v; want mode 0755", fi, err)
	}
	got, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Load = %+v, want %+v", got, want)
	}
	if err := Save(dir, &Snapshot{}); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 || entries[0].Name() != SnapshotFile {
		t.Errorf("dir holds %v, want only %s", entries, SnapshotFile)
	}
}

func TestLoadInvalid(t *testing.T) {
	dir := t.TempDir()
	for _, data := range []string{"{", `{"networks": [{"listen": ["not an address"]}]}`, `{"port": 70000}`} {
		if err := os.WriteFile(filepath.Join(dir, SnapshotFile), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
		if s, err := Load(dir); err == nil || !strings.Contains(err.Error(), SnapshotFile) {
			t.Errorf("Load of %q = %+v, %v; want an error naming the file", data, s, err)
		}
	}
}
