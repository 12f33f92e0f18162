package migrate

import (
	"fmt"
	"testing"
)

func TestParseEnvFile(t *testing.T) {
	tests := []struct {
		name, text string
		want       string // key=value@line …
		ignored    int
	}{
		{"plain", "A=1\n  B = two words  \n", "[A=1@1 B=two words@2]", 0},
		{"comments", "# c\n; c\n\nA=1 # not a comment\n", "[A=1 # not a comment@4]", 0},
		{"double quotes", `A="Thu 23:00"` + "\n" + `B="say \"hi\" \\ \$x"`, `[A=Thu 23:00@1 B=say "hi" \ $x@2]`, 0},
		{"single quotes", "A='a \\b \"c\"'\n", `[A=a \b "c"@1]`, 0},
		{"continued", "A=one\\\ntwo\nB=3\n", "[A=onetwo@1 B=3@3]", 0},
		{"quoted over lines", "A=\"one\ntwo\"\nB=3\n", "[A=one\ntwo@1 B=3@3]", 0},
		{"quotes inside", `A=x"y z"w` + "\n", "[A=xy zw@1]", 0},
		{"escaped blank", "A=x\\ \n", "[A=x @1]", 0},
		{"not an assignment", "export A=1\nA B=2\n=3\nC=4\n", "[C=4@4]", 3},
		{"crlf", "A=1\r\nB=2\r\n", "[A=1@1 B=2@2]", 0},
		{"empty", "A=\n", "[A=@1]", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ignored := 0
			vars := parseEnvFile(Source{Name: "f", Data: []byte(tt.text)}, func(Note) { ignored++ })
			var got []string
			for _, v := range vars {
				got = append(got, fmt.Sprintf("%s=%s@%d", v.key, v.value, v.pos.Line))
			}
			if fmt.Sprint(got) != tt.want || ignored != tt.ignored {
				t.Fatalf("got %q (%d ignored), want %q (%d)", fmt.Sprint(got), ignored, tt.want, tt.ignored)
			}
		})
	}
}

func TestParseYAML(t *testing.T) {
	const doc = `# comment
---
kind: DaemonSet # trailing comment
spec:
  list:
  - a
  - "b # not a comment"
  - 'it''s'
  - [x, "y, z"]
  nested:
    - name: one
      value: 1
    -
      name: two
  folded: >-
    long
    text
  literal: |
    line 1
    line 2
  plain: first
    continued
  url: http://example.com:8080/x
  anchored: &a !!str tagged
---
kind: Other
`
	docs, err := parseYAML(Source{Name: "m.yaml", Data: []byte(doc)})
	if err != nil {
		t.Fatal(err)
	}
	if len(docs) != 2 || docs[0].get("kind").str() != "DaemonSet" || docs[1].get("kind").str() != "Other" {
		t.Fatalf("docs: %d", len(docs))
	}
	spec := docs[0].get("spec")
	var list []string
	for _, it := range spec.get("list").itemsOf() {
		if it.isSeq {
			list = append(list, fmt.Sprintf("%d %s", len(it.items), it.items[1].str()))
			continue
		}
		list = append(list, it.str())
	}
	if fmt.Sprint(list) != "[a b # not a comment it's 2 y, z]" {
		t.Errorf("list %q", list)
	}
	nested := spec.get("nested").itemsOf()
	if len(nested) != 2 || nested[0].get("value").str() != "1" || nested[0].get("value").line != 12 || nested[1].get("name").str() != "two" {
		t.Errorf("nested %+v", nested)
	}
	for key, want := range map[string]string{
		"folded": "long text", "literal": "line 1\nline 2", "plain": "first continued",
		"url": "http://example.com:8080/x", "anchored": "tagged",
	} {
		if got := spec.get(key).str(); got != want {
			t.Errorf("%s = %q, want %q", key, got, want)
		}
	}
	for _, bad := range []string{"a: 1\n  b: 2\n", "a: [1, 2\n", "a: 'x\n"} {
		if _, err := parseYAML(Source{Name: "bad.yaml", Data: []byte(bad)}); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func TestAlertNames(t *testing.T) {
	tests := []struct {
		expr string
		want string
	}{
		{"^RebootRequired$", "[RebootRequired] true"},
		{"^(RebootRequired|Watchdog)$", "[RebootRequired Watchdog] true"},
		{"^(?:B|A|B)$", "[A B] true"},
		{`^Node\.Down$`, "[Node.Down] true"},
		{"RebootRequired", "[] false"},
		{"^Reboot.*$", "[] false"},
		{"^(?i)reboot$", "[] false"},
		{"^(A|(B))$", "[] false"},
	}
	for _, tt := range tests {
		names, ok := alertNames(tt.expr)
		if got := fmt.Sprint(names, " ", ok); got != tt.want {
			t.Errorf("%s: %s, want %s", tt.expr, got, tt.want)
		}
	}
}
