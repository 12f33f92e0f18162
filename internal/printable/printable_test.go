package printable

import "testing"

func TestString(t *testing.T) {
	cases := []struct{ in, want string }{
		{"node-a web-1", "node-a web-1"},
		{"grüße", "grüße"},
		{"n1\x1b]0;owned\x07", `n1\x1b]0;owned\a`},
		{"a\nb\tc\x00", `a\nb\tc\x00`},
		{"csi\u009b2J", `csi\u009b2J`},
		{"bad\xffbyte", `bad\xffbyte`},
		{"bidi\u202eevil", `bidi\u202eevil`},
	}
	for _, c := range cases {
		if got := String(c.in); got != c.want {
			t.Errorf("String(%q) = %q, want %q", c.in, got, c.want)
		}
		if !Is(String(c.in)) {
			t.Errorf("String(%q) = %q is not printable", c.in, String(c.in))
		}
	}
}

func FuzzString(f *testing.F) {
	for _, s := range []string{"n1", "\x1b[2J", "\xff\xfe", "a\u009bb"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out := String(s)
		if !Is(out) {
			t.Fatalf("String(%q) = %q is not printable", s, out)
		}
		if Is(s) && out != s {
			t.Fatalf("printable %q changed to %q", s, out)
		}
	})
}
