// Package redact hides secrets in what offpeak prints: policy settings
// (`policy show`) and records other nodes wrote (lock holders).
//
// What counts as a secret, in this order:
//
//   - the value of a key a plugin's config schema lists in SecretKeys (the
//     built-ins declare theirs beside their Config type);
//   - the value of a key whose name says it is one (SecretName: password,
//     token, secret, api_key, authorization, cookie, headers, …; names
//     ending in _file, _path or _dir hold a path and are not secret);
//   - inside any string: the user info of a URL (scheme://user:pass@host,
//     and user:pass@host without a scheme),
//     every query value of a URL (webhook and API tokens travel there),
//     the value of KEY=VALUE or --key=value when KEY is a secret name, and
//     values shaped like a credential: "Bearer …"/"Basic …" with at least
//     12 token characters, JSON web
//     tokens, PEM private keys and the documented prefixes of common API
//     tokens (GitHub, GitLab, Slack, AWS access key ids, Stripe, Google).
//
// A secret value becomes Mask; map keys, URL hosts and paths and the names
// in KEY=VALUE stay, so the output still says what is configured. Secrets
// that look like none of these (a bare token as a separate argument, a
// credential inside a URL path) cannot be recognised: keep such values in
// keys the schema declares secret.
package redact

import (
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
)

// Mask replaces every secret value.
const Mask = "(redacted)"

// Secrets is implemented by a plugin's config schema (the zero Config
// struct whose json tags name its keys): SecretKeys lists the keys whose
// values are secrets. Every built-in schema implements it, with nil when it
// has none.
type Secrets interface {
	SecretKeys() []string
}

// KeysOf returns schema's SecretKeys, or nil when schema declares none.
func KeysOf(schema any) []string {
	if s, ok := schema.(Secrets); ok {
		return s.SecretKeys()
	}
	return nil
}

// secretWords appear in names of keys that hold secrets.
var secretWords = []string{
	"password", "passwd", "passphrase", "secret", "token", "apikey", "api_key",
	"credential", "authorization", "cookie", "private_key", "privatekey",
	"access_key", "accesskey", "session_key", "signature", "header",
}

// SecretName reports whether a key's name says its value is a secret.
func SecretName(key string) bool {
	k := strings.ToLower(strings.TrimLeft(key, "-"))
	k = strings.ReplaceAll(k, "-", "_")
	for _, suffix := range []string{"_file", "_path", "_dir"} {
		if strings.HasSuffix(k, suffix) {
			return false
		}
	}
	for _, w := range secretWords {
		if strings.Contains(k, w) {
			return true
		}
	}
	parts := strings.Split(k, "_")
	return slices.Contains(parts, "auth") || slices.Contains(parts, "pass") || slices.Contains(parts, "pwd") ||
		k == "key" || strings.HasSuffix(k, "_key")
}

var (
	urlRe = regexp.MustCompile(`[A-Za-z][A-Za-z0-9+.\-]*://[^\s"'<>]+`)
	// userinfoRe finds user:password@host without a scheme (an address
	// given where host:port was expected).
	userinfoRe = regexp.MustCompile(`(^|[\s"'=,;(\[])[^\s"'/@:=,;()\[\]]+:[^\s"'/@]+@([A-Za-z0-9.\-]+|\[[0-9A-Fa-f:.]+\])`)
	// kvRe finds KEY=VALUE and --key=value at the start of a string or
	// after a separator.
	kvRe    = regexp.MustCompile(`(^|[\s;,&?])(-{0,2}[A-Za-z_][A-Za-z0-9_.\-]*)=([^\s;,&]+)`)
	tokenRe = regexp.MustCompile(`(?i:\b(?:bearer|basic)\s+)[A-Za-z0-9._~+/=\-]{12,}` +
		`|\beyJ[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+` +
		`|-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)` +
		`|\b(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}|glpat-[A-Za-z0-9_\-]{20,}|xox[abprs]-[A-Za-z0-9\-]{10,}` +
		`|(?:AKIA|ASIA)[0-9A-Z]{16}|[sr]k_live_[0-9A-Za-z]{16,}|AIza[0-9A-Za-z_\-]{35})`)
)

// String returns s with every secret it can recognise inside replaced by
// Mask: URL user info and query values, secret KEY=VALUE values and
// credential-shaped values (see the package comment).
func String(s string) string {
	if s == "" {
		return s
	}
	s = urlRe.ReplaceAllStringFunc(s, URL)
	s = userinfoRe.ReplaceAllString(s, "${1}"+Mask+"@${2}")
	s = kvRe.ReplaceAllStringFunc(s, func(m string) string {
		sub := kvRe.FindStringSubmatch(m)
		if !SecretName(sub[2]) || sub[3] == Mask {
			return m
		}
		return sub[1] + sub[2] + "=" + Mask
	})
	return tokenRe.ReplaceAllStringFunc(s, func(m string) string {
		if i := strings.IndexAny(m, " \t"); i > 0 && !strings.HasPrefix(m, "-----") {
			return m[:i+1] + Mask // keep "Bearer "
		}
		return Mask
	})
}

// Secret reports whether s holds something String would hide.
func Secret(s string) bool { return String(s) != s }

// URL hides the user info and every query value of a URL, keeping the
// scheme, host, path and query keys. Text that is not a URL is returned
// as it is. It works on the text itself, so nothing else is re-encoded.
func URL(raw string) string {
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return raw
	}
	end := strings.IndexAny(rest, "/?#")
	if end < 0 {
		end = len(rest)
	}
	authority, tail := rest[:end], rest[end:]
	if at := strings.LastIndexByte(authority, '@'); at >= 0 {
		authority = Mask + authority[at:]
	}
	path, query, hasQuery := strings.Cut(tail, "?")
	if !hasQuery {
		return scheme + "://" + authority + tail
	}
	query, frag, hasFrag := strings.Cut(query, "#")
	params := strings.Split(query, "&")
	for i, p := range params {
		k, v, hasValue := strings.Cut(p, "=")
		switch {
		case hasValue && v != "":
			params[i] = k + "=" + Mask
		case !hasValue && p != "":
			params[i] = Mask
		}
	}
	out := scheme + "://" + authority + path + "?" + strings.Join(params, "&")
	if hasFrag {
		out += "#" + frag
	}
	return out
}

// Value returns a copy of a decoded setting (TOML or JSON: strings, maps,
// slices, numbers) fit to print. With secret every non-empty string in it
// becomes Mask (map keys stay); without, the values of keys named like
// secrets are hidden and other strings pass through String.
func Value(v any, secret bool) any {
	switch x := v.(type) {
	case string:
		if !secret {
			return String(x)
		}
		if x == "" {
			return x
		}
		return Mask
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = Value(e, secret || SecretName(k))
		}
		return out
	case map[string]string:
		out := make(map[string]string, len(x))
		for k, e := range x {
			out[k] = Value(e, secret || SecretName(k)).(string)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = Value(e, secret)
		}
		return out
	case []string:
		out := make([]string, len(x))
		for i, e := range x {
			out[i] = Value(e, secret).(string)
		}
		return out
	case []map[string]any:
		out := make([]map[string]any, len(x))
		for i, e := range x {
			out[i] = Value(e, secret).(map[string]any)
		}
		return out
	}
	return v
}

// Config returns a copy of a plugin's settings fit to print: the values of
// secretKeys (the schema's SecretKeys) and of keys named like secrets are
// hidden, and every other string passes through String.
func Config(cfg map[string]any, secretKeys []string) map[string]any {
	if cfg == nil {
		return nil
	}
	out := make(map[string]any, len(cfg))
	for k, v := range cfg {
		out[k] = Value(v, slices.Contains(secretKeys, k) || SecretName(k))
	}
	return out
}

// SchemaProblems checks a config schema (a pointer to a zero Config struct
// with json tags) against the rule that every plugin declares its secrets:
// it implements Secrets, every key it lists exists, and every key named
// like a secret is listed. The tests of each plugin registry run it over
// every schema, so a new plugin cannot forget its table.
func SchemaProblems(schema any) []string {
	s, ok := schema.(Secrets)
	if !ok {
		return []string{fmt.Sprintf("%T does not implement SecretKeys (return nil when nothing is secret)", schema)}
	}
	t := reflect.TypeOf(schema)
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	keys := map[string]bool{}
	for i := range t.NumField() {
		if name := strings.Split(t.Field(i).Tag.Get("json"), ",")[0]; name != "" && name != "-" {
			keys[name] = true
		}
	}
	var problems []string
	declared := s.SecretKeys()
	for _, k := range declared {
		if !keys[k] {
			problems = append(problems, fmt.Sprintf("%T lists secret key %q, which it does not have", schema, k))
		}
	}
	for k := range keys {
		if SecretName(k) && !slices.Contains(declared, k) {
			problems = append(problems, fmt.Sprintf("%T key %q is named like a secret but not in SecretKeys", schema, k))
		}
	}
	sort.Strings(problems)
	return problems
}
