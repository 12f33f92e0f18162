package cli

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// secretMarker starts every secret value of secretsPolicy; nothing offpeak
// prints may contain it.
const secretMarker = "S3CR3T"

// secretsCommon sets every secret-bearing key of the built-in checks, of a
// third-party check, of the webhook and of the installer to a marker, plus
// credentials inside URLs (user info and query) and KEY=VALUE arguments.
const secretsCommon = `
strategy = "window"
[node]
id = "node-a"

[[health]]
name = "web"
plugin = "http"
phase = "pre-reboot"
[health.config]
url = "http://monitor:S3CR3T-http-userinfo@127.0.0.1:1/ok?token=S3CR3T-http-query"
headers = { Authorization = "Bearer S3CR3T-http-header", X-Api-Key = "S3CR3T-http-header2" }

[[health]]
name = "alerts"
plugin = "prometheus"
phase = "pre-reboot"
[health.config]
url = "http://prom:S3CR3T-prom-userinfo@127.0.0.1:1/?access_token=S3CR3T-prom-query"

[[health]]
name = "script"
plugin = "exec"
phase = "post-boot"
[health.config]
argv = ["/bin/false", "https://u:S3CR3T-argv-url@x.example/", "--token=S3CR3T-argv-flag"]
env = { API_TOKEN = "S3CR3T-exec-env", PLAIN = "S3CR3T-exec-env2" }

[[health]]
name = "thirdparty"
plugin = "acme-check"
phase = "post-boot"
[health.config]
api_key = "S3CR3T-tp-apikey"
endpoint = "https://svc:S3CR3T-tp-userinfo@acme.example/v1?sig=S3CR3T-tp-query"
[health.config.auth]
client_secret = "S3CR3T-tp-nested"

[notify]
webhook = "http://hooks:S3CR3T-webhook-userinfo@127.0.0.1:1/offpeak?token=S3CR3T-webhook-query"
[notify.headers]
Authorization = "Bearer S3CR3T-notify-header"

[[detect]]
kind = "command"
argv = ["/bin/false", "--url=https://u:S3CR3T-detect@repo.example/", "password=S3CR3T-detect-kv"]
`

// secretsLockers sets every secret-bearing key of each locker.
var secretsLockers = map[string]string{
	"etcd": `
[lock]
plugin = "etcd"
[lock.config]
endpoints = ["http://root:S3CR3T-etcd-endpoint@127.0.0.1:1"]
username = "root"
password = "S3CR3T-etcd-password"
dial_timeout = "200ms"
request_timeout = "500ms"
`,
	"consul": `
[lock]
plugin = "consul"
[lock.config]
address = "127.0.0.1:1"
token = "S3CR3T-consul-token"
request_timeout = "1s"
`,
	"fleetlock": `
[lock]
plugin = "fleetlock"
[lock.config]
url = "http://fl:S3CR3T-fl-userinfo@127.0.0.1:1/?token=S3CR3T-fl-query"
token = "S3CR3T-fl-token"
max_retries = 0
request_timeout = "1s"
`,
	// Configuration errors must not echo the secret either.
	"fleetlock, not http": `
[lock]
plugin = "fleetlock"
[lock.config]
url = "ftp://fl:S3CR3T-fl-badurl@127.0.0.1:1/"
`,
	"fleetlock, TLS without https": `
[lock]
plugin = "fleetlock"
[lock.config]
url = "http://fl:S3CR3T-fl-nottls@127.0.0.1:1/?token=S3CR3T-fl-nottls-query"
insecure_skip_verify = true
`,
	"consul, not host:port": `
[lock]
plugin = "consul"
[lock.config]
address = "c:S3CR3T-consul-addr@127.0.0.1"
`,
	"third-party": `
[lock]
plugin = "acme-lock"
[lock.config]
password = "S3CR3T-tpl-password"
secret_token = "S3CR3T-tpl-token"
dsn = "postgres://u:S3CR3T-tpl-dsn@db.example/locks"
`,
}

// secretsInstaller sets the installer's command arguments.
const secretsInstaller = `
[installer]
backend = "update-engine"
[installer.config]
rollback_command = ["/opt/bin/rollback", "--password=S3CR3T-ue-flag", "https://u:S3CR3T-ue-url@x.example/"]
`

func noMarker(t *testing.T, what, out string) {
	t.Helper()
	if i := strings.Index(out, secretMarker); i >= 0 {
		end := min(len(out), i+40)
		t.Errorf("%s leaks a secret: …%s…", what, out[max(0, i-60):end])
	}
}

// TestPolicyShowRedactsSecrets: `policy show` in both formats prints no
// secret of any plugin schema, URL or KEY=VALUE argument, and still shows
// what is not secret.
func TestPolicyShowRedactsSecrets(t *testing.T) {
	for name, locker := range secretsLockers {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			pol := writeFile(t, filepath.Join(dir, "policy.toml"), secretsCommon+locker+secretsInstaller)
			if out, errOut, code := run(t, &App{Root: dir}, "policy", "validate", "--policy", pol); code != 0 {
				t.Fatalf("the test policy is invalid: %s%s", out, errOut)
			}
			for _, format := range []string{"toml", "json"} {
				out, errOut, code := run(t, &App{Root: dir}, "policy", "show", "--policy", pol, "-o", format)
				if code != 0 {
					t.Fatalf("policy show -o %s: exit %d: %s", format, code, errOut)
				}
				noMarker(t, "policy show -o "+format, out+errOut)
				for _, keep := range []string{"(redacted)", "127.0.0.1:1", "acme.example", "/bin/false", "API_TOKEN"} {
					if !strings.Contains(out, keep) {
						t.Errorf("policy show -o %s lost %q:\n%s", format, keep, out)
					}
				}
				if n := len(regexp.MustCompile(`\(redacted\)`).FindAllString(out, -1)); n < 10 {
					t.Errorf("policy show -o %s redacted only %d values:\n%s", format, n, out)
				}
			}
		})
	}
}

// secretsRun is the policy of the runs below: secretsCommon with a locker
// and a strategy, every check before the reboot (phase) or after it.
func secretsRun(strategy, locker, phase string) string {
	p := strings.Replace(secretsCommon, `strategy = "window"`, `strategy = "`+strategy+`"`, 1)
	p = strings.ReplaceAll(p, `phase = "pre-reboot"`, `phase = "`+phase+`"`)
	p = strings.ReplaceAll(p, `phase = "post-boot"`, `phase = "`+phase+`"`)
	return p + locker
}

// secretsRoot is a node's root directory for the runs below.
func secretsRoot(t *testing.T) string {
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "etc/machine-id"), "node-a\n")
	writeFile(t, filepath.Join(root, "proc/sys/kernel/random/boot_id"), "boot-1\n")
	return root
}

// TestSecretsStayOutOfLogsStatusMetricsAndErrors runs passes whose every
// call fails (the lockers, the checks and the webhook point at a closed
// port), at debug level, and finds no secret in the logs, the decisions,
// `status`, `locks status`, the metrics or any error.
func TestSecretsStayOutOfLogsStatusMetricsAndErrors(t *testing.T) {
	var seen strings.Builder
	collect := func(t *testing.T, what string, out ...string) {
		t.Helper()
		for _, o := range out {
			noMarker(t, what, o)
			seen.WriteString(o)
		}
	}

	// Best effort: the locker fails, then every check fails.
	for name, locker := range secretsLockers {
		t.Run(name, func(t *testing.T) {
			root := secretsRoot(t)
			pre := writeFile(t, filepath.Join(root, "pre.toml"), secretsRun("best-effort", locker, "pre-reboot"))
			for _, format := range []string{"text", "json"} {
				out, errOut, _ := run(t, &App{Root: root, Rebooter: &recordingRebooter{}}, "--log-level", "debug", "check", "--policy", pre, "-o", format)
				collect(t, "check -o "+format, out, errOut)
			}
			for _, format := range []string{"text", "json"} {
				out, errOut, _ := run(t, &App{Root: root}, "status", "-o", format)
				collect(t, "status -o "+format, out, errOut)
				out, errOut, _ = run(t, &App{Root: root}, "--log-level", "debug", "locks", "status", "--policy", pre, "-o", format)
				collect(t, "locks status -o "+format, out, errOut)
			}
			if name == "third-party" {
				return // no such plugin: the agent refuses to start
			}

			// Metrics of an agent that goes through the same failures.
			metricsSock := filepath.Join(t.TempDir(), "metrics.sock")
			var stderr syncBuffer
			app := &App{Root: secretsRoot(t), Stdin: strings.NewReader(""), Stdout: io.Discard, Stderr: &stderr, Now: time.Now, Exe: os.Args[0]}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			exit := make(chan int, 1)
			go func() {
				exit <- app.Run(ctx, []string{"--log-level", "debug", "agent", "--policy", pre, "--coordinator-conf", "off", "--metrics-listen", "unix:" + metricsSock})
			}()
			c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, "unix", metricsSock)
			}}}
			scrape := func() string {
				resp, err := c.Get("http://offpeak/metrics")
				if err != nil {
					return ""
				}
				defer resp.Body.Close()
				b, _ := io.ReadAll(resp.Body)
				return string(b)
			}
			// The log line comes before the metrics observer sees the
			// decision: wait for the metrics themselves.
			tick := time.NewTicker(20 * time.Millisecond)
			defer tick.Stop()
			hang := time.After(2 * time.Minute) // hang guard only
			var body string
			for body = scrape(); !strings.Contains(body, `offpeak_decision{decision="wait-health"} 1`); body = scrape() {
				select {
				case <-tick.C:
				case code := <-exit:
					t.Fatalf("agent exited %d: %s", code, stderr.String())
				case <-hang:
					t.Fatalf("the metrics never showed the decision:\n%s\n%s", body, stderr.String())
				}
			}
			cancel()
			<-exit
			collect(t, "metrics", body)
			collect(t, "agent log", stderr.String())
		})
	}

	// Reboot: the webhook is refused; after the boot the checks fail and
	// the webhook is refused again.
	var hooks atomic.Int32
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hooks.Add(1)
		w.WriteHeader(http.StatusForbidden)
	}))
	defer hook.Close()
	root := secretsRoot(t)
	pol := strings.Replace(secretsRun("reboot", "", "post-boot"), "@127.0.0.1:1/offpeak", "@"+hook.Listener.Addr().String()+"/offpeak", 1)
	post := writeFile(t, filepath.Join(root, "post.toml"), pol)
	rb := &recordingRebooter{}
	clock := fakeClock(t, "2025-06-03T02:30:00Z")
	// One pass of an agent process on the fake clock, as `check` runs it.
	pass := func(what string) string {
		var logs syncBuffer
		app := &App{Root: root, Rebooter: rb, Now: clock.Now, Exe: os.Args[0], Stdout: io.Discard, Stderr: io.Discard}
		app.Logger = newLogger(&logs, "debug")
		p, err := app.LoadPolicy(post)
		if err != nil {
			t.Fatal(err)
		}
		rt, err := app.buildAgent(t.Context(), p, agentFlags{clock: clock})
		if err != nil {
			t.Fatal(err)
		}
		r, err := rt.agent.Step(t.Context())
		rt.Close()
		b, _ := json.Marshal(r)
		out := string(b) + "\n" + logs.String()
		if err != nil {
			out += "\n" + err.Error()
		}
		collect(t, what, out)
		return out
	}
	if out := pass("the reboot pass"); rb.calls != 1 {
		t.Fatalf("no reboot: %s", out)
	}
	writeFile(t, filepath.Join(root, "proc/sys/kernel/random/boot_id"), "boot-2\n")
	clock.Advance(15 * time.Minute) // past the post-boot grace
	if out := pass("the post-boot pass"); !strings.Contains(out, "post-boot check") {
		t.Errorf("the post-boot checks did not fail:\n%s", out)
	}
	out, errOut, _ := run(t, &App{Root: root}, "status")
	collect(t, "status after the post-boot failure", out, errOut)
	if hooks.Load() < 2 {
		t.Errorf("the webhook was called %d times, want 2 (reboot, post-boot failure)", hooks.Load())
	}

	for _, want := range []string{"connection refused", "127.0.0.1:1", "webhook", "status 403"} {
		if !strings.Contains(seen.String(), want) {
			t.Errorf("the runs never reported %q; the test no longer exercises the failures", want)
		}
	}
}
