package redact

import (
	"reflect"
	"strings"
	"testing"
)

func TestSecretName(t *testing.T) {
	for _, k := range []string{"password", "Password", "db_password", "passwd", "token", "secret_token", "client_secret",
		"api_key", "apikey", "X-Api-Key", "Authorization", "auth", "basic_auth", "cookie", "private_key", "key", "ssh_key",
		"headers", "access_key_id", "--token", "pass"} {
		if !SecretName(k) {
			t.Errorf("SecretName(%q) = false", k)
		}
	}
	for _, k := range []string{"url", "username", "user", "endpoints", "token_file", "key_file", "bearer_token_file", "ca_file",
		"ssh_key_path", "secrets_dir", "address", "prefix", "argv", "env", "keyboard", "monkey", "author", "passage"} {
		if SecretName(k) {
			t.Errorf("SecretName(%q) = true", k)
		}
	}
}

func TestString(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", ""},
		{"plain text, no secret", "plain text, no secret"},
		{"https://example.com/path", "https://example.com/path"},
		{"http://user:pass@host:8080/x", "http://(redacted)@host:8080/x"},
		{"https://TOKEN@github.com/org/repo.git", "https://(redacted)@github.com/org/repo.git"},
		{"https://hooks.example/h?token=abc&x=1#frag", "https://hooks.example/h?token=(redacted)&x=(redacted)#frag"},
		{"https://h/?flag&k=", "https://h/?(redacted)&k="},
		{"--url=https://u:p@repo.example/", "--url=https://(redacted)@repo.example/"},
		{`Get "http://a:b@127.0.0.1:1/ok?t=z": connection refused`, `Get "http://(redacted)@127.0.0.1:1/ok?t=(redacted)": connection refused`},
		{"--token=abc", "--token=(redacted)"},
		{"c:secret@127.0.0.1", "(redacted)@127.0.0.1"},
		{`address "u:p@[::1]" must be host:port`, `address "(redacted)@[::1]" must be host:port`},
		{"bob@example.com at 12:30", "bob@example.com at 12:30"},
		{"password=abc user=bob", "password=(redacted) user=bob"},
		{"host=db password=hunter2 sslmode=require", "host=db password=(redacted) sslmode=require"},
		{"API_TOKEN=xyz", "API_TOKEN=(redacted)"},
		{"version=1.2.3", "version=1.2.3"},
		{"Bearer abcdefghijklmnop", "Bearer (redacted)"},
		{"basic maintenance", "basic maintenance"},
		{"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl", "(redacted)"},
		{"-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----", "(redacted)"},
		{"token ghp_0123456789abcdefghijABCDEFGHIJ", "token (redacted)"},
		{"AKIAIOSFODNN7EXAMPLE", "(redacted)"},
		{"xoxb-1234567890-abcdef", "(redacted)"},
		{"3815.2.0", "3815.2.0"},
		{"0123456789abcdef0123456789abcdef", "0123456789abcdef0123456789abcdef"},
		{"e2b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", "e2b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
	}
	for _, tt := range tests {
		if got := String(tt.in); got != tt.want {
			t.Errorf("String(%q) = %q, want %q", tt.in, got, tt.want)
		}
		if Secret(tt.in) != (tt.in != tt.want) {
			t.Errorf("Secret(%q) = %v", tt.in, Secret(tt.in))
		}
	}
}

func TestConfig(t *testing.T) {
	in := map[string]any{
		"url":      "https://u:p@h/?k=v",
		"username": "root",
		"password": "hunter2",
		"empty":    "",
		"token":    "",
		"headers":  map[string]any{"Authorization": "Bearer x", "Host": "h"},
		"env":      []any{"A=1", "B=2"},
		"nested":   map[string]any{"client_secret": "s", "name": "n"},
		"slots":    int64(2),
		"argv":     []any{"/bin/x", "--password=p"},
	}
	got := Config(in, []string{"env"})
	want := map[string]any{
		"url":      "https://(redacted)@h/?k=(redacted)",
		"username": "root",
		"password": Mask,
		"empty":    "",
		"token":    "",
		"headers":  map[string]any{"Authorization": Mask, "Host": Mask},
		"env":      []any{Mask, Mask},
		"nested":   map[string]any{"client_secret": Mask, "name": "n"},
		"slots":    int64(2),
		"argv":     []any{"/bin/x", "--password=(redacted)"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Config =\n%#v\nwant\n%#v", got, want)
	}
	if in["password"] != "hunter2" || in["headers"].(map[string]any)["Authorization"] != "Bearer x" {
		t.Fatal("Config changed its input")
	}
}

func FuzzString(f *testing.F) {
	for _, s := range []string{"http://u:p@h/?a=b", "password=x", "Bearer abcdefghijklmnop", "eyJa.eyJb.c", "x://@?&=#"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		once := String(s)
		if twice := String(once); twice != once {
			t.Fatalf("String is not idempotent: %q -> %q -> %q", s, once, twice)
		}
		if strings.Contains(s, "://") {
			_ = URL(s)
		}
	})
}
