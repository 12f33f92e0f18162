package statefile

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

func TestSaveLoad(t *testing.T) {
	f := File{Path: filepath.Join(t.TempDir(), "sub", "state.json")}
	var v map[string]int
	if err := f.Load(&v); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
	if err := f.Save(map[string]int{"a": 1}); err != nil {
		t.Fatal(err)
	}
	if err := f.Save(map[string]int{"a": 2}); err != nil {
		t.Fatal(err)
	}
	if err := f.Load(&v); err != nil || v["a"] != 2 {
		t.Fatalf("got %v %v", v, err)
	}
	ents, _ := os.ReadDir(filepath.Dir(f.Path))
	if len(ents) != 1 {
		t.Fatalf("temporary files left behind: %v", ents)
	}
}

func TestCorrupt(t *testing.T) {
	f := File{Path: filepath.Join(t.TempDir(), "state.json")}
	if err := os.WriteFile(f.Path, []byte("{\"a\": "), 0o644); err != nil {
		t.Fatal(err)
	}
	var v map[string]int
	if err := f.Load(&v); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("got %v", err)
	}
}

func TestFailedWriteKeepsOld(t *testing.T) {
	dir := t.TempDir()
	f := File{Path: filepath.Join(dir, "state.json")}
	if err := f.Save(map[string]int{"a": 1}); err != nil {
		t.Fatal(err)
	}
	// A value that cannot be encoded fails before anything is written.
	if err := f.Save(map[string]any{"bad": make(chan int)}); err == nil {
		t.Fatal("unencodable value saved")
	}
	var v map[string]int
	if err := f.Load(&v); err != nil || v["a"] != 1 {
		t.Fatalf("old content lost: %v %v", v, err)
	}
}
