package registry

import (
	"context"
	"slices"
	"testing"
)

type thing struct{ root, joined string }

// TestSet: lookups by name, names in listed order, the first of a
// duplicate kept, and New filling in what the environment left out.
func TestSet(t *testing.T) {
	mk := func(name string) Module[*thing] {
		return Module[*thing]{Name: name, Config: func() any { return &struct{}{} },
			New: func(_ context.Context, env Env) (*thing, func(), error) {
				env.Log.Debug("built")
				return &thing{root: env.Root, joined: env.Join("/x")}, nil, nil
			}}
	}
	first := mk("b")
	s := NewSet(first, mk("a"), Module[*thing]{Name: "b"})
	if got := s.Names(); !slices.Equal(got, []string{"b", "a"}) {
		t.Fatalf("names %q", got)
	}
	if got := s.Sorted(); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("sorted %q", got)
	}
	if m, ok := s.Lookup("b"); !ok || m.Config == nil {
		t.Fatal("the first module named b is not the one kept")
	}
	if s.Schema("c") != nil || s.Schema("a") == nil {
		t.Fatal("schemas")
	}
	v, cleanup, ok, err := s.New(context.Background(), "a", Env{Root: "/r"})
	if !ok || err != nil || cleanup == nil || v.root != "/r" || v.joined != "/x" {
		t.Fatalf("New: %+v %v %v", v, ok, err)
	}
	cleanup()
	if _, cleanup, ok, _ := s.New(context.Background(), "c", Env{}); ok || cleanup == nil {
		t.Fatal("an unknown name was built")
	}
}
