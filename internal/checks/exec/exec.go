// Package exec is the built-in "exec" health check: it runs a command
// (argv, never a shell) and passes when it exits 0.
//
// Environment: the command does not inherit the agent's environment. It
// gets PATH (the agent's, or a standard system PATH when the agent has
// none), OFFPEAK_CHECK, OFFPEAK_PHASE, OFFPEAK_NODE_ID and OFFPEAK_GROUP,
// then the configured env entries, which may override any of those. A bare
// argv[0] is looked up in that final PATH.
//
// The command runs in its own process group. When the caller's context ends,
// and again once the command itself has exited, the whole group is killed
// so no background children outlive the check.
package exec

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	osexec "os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/offpeak/offpeak/internal/checks/checkutil"
	"github.com/offpeak/offpeak/internal/httpx"
	"github.com/offpeak/offpeak/internal/registry"
	"github.com/offpeak/offpeak/plugins"
)

const (
	// DefaultMaxOutput is how many bytes of output are kept when max_output
	// is not set.
	DefaultMaxOutput = 4096
	// MaxMaxOutput caps max_output so a check cannot make the agent hold a
	// large buffer.
	MaxMaxOutput = 1 << 20

	defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	// reasonLines and reasonBytes bound the output quoted in a reason; the
	// full kept output is in Details["output"].
	reasonLines = 3
	reasonBytes = 300
	// waitDelay bounds how long output pipes are drained after the process
	// group is gone, for descendants that left the group and kept a pipe.
	waitDelay = 2 * time.Second
)

// Config is the [health.config] table of an exec check.
type Config struct {
	// Argv is the program and its arguments. Required.
	Argv []string `json:"argv"`
	// Env adds variables, as a table {"K" = "V"} or a list ["K=V"].
	Env Env `json:"env,omitempty"`
	// Dir is the working directory, an absolute path; default "/".
	Dir string `json:"dir,omitempty"`
	// MaxOutput is how many bytes of combined stdout and stderr are kept
	// (the last ones). Default DefaultMaxOutput.
	MaxOutput int `json:"max_output,omitempty"`
}

// SecretKeys lists the settings `policy show` must not print: environment
// variables commonly carry credentials.
func (Config) SecretKeys() []string { return []string{"env"} }

// Env is a set of environment variables that reads from JSON as an object
// or as a list of "K=V" strings.
type Env map[string]string

// UnmarshalJSON accepts {"K":"V"} or ["K=V", ...].
func (e *Env) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if bytes.Equal(b, []byte("null")) {
		*e = nil
		return nil
	}
	if len(b) > 0 && b[0] == '[' {
		var list []string
		if err := json.Unmarshal(b, &list); err != nil {
			return fmt.Errorf("env list: %w", err)
		}
		m := make(Env, len(list))
		for _, kv := range list {
			k, v, ok := strings.Cut(kv, "=")
			if !ok {
				return fmt.Errorf("env entry %q is not K=V", k)
			}
			m[k] = v
		}
		*e = m
		return nil
	}
	var m map[string]string
	if err := json.Unmarshal(b, &m); err != nil {
		return fmt.Errorf("env must be a table or a list of \"K=V\": %w", err)
	}
	*e = m
	return nil
}

func (c *Config) validate() error {
	if len(c.Argv) == 0 || c.Argv[0] == "" {
		return fmt.Errorf("%w: argv is required", plugins.ErrInvalidArgument)
	}
	for i, a := range c.Argv {
		if strings.IndexByte(a, 0) >= 0 {
			return fmt.Errorf("%w: argv[%d] contains a NUL byte", plugins.ErrInvalidArgument, i)
		}
	}
	for k, v := range c.Env {
		if k == "" || strings.ContainsAny(k, "=\x00") {
			return fmt.Errorf("%w: env: bad variable name %q", plugins.ErrInvalidArgument, k)
		}
		if strings.IndexByte(v, 0) >= 0 {
			// The value may be a secret: name only the variable.
			return fmt.Errorf("%w: env: value of %s contains a NUL byte", plugins.ErrInvalidArgument, k)
		}
	}
	if c.Dir != "" && !filepath.IsAbs(c.Dir) {
		return fmt.Errorf("%w: dir must be an absolute path, not %q", plugins.ErrInvalidArgument, c.Dir)
	}
	switch {
	case c.MaxOutput < 0 || c.MaxOutput > MaxMaxOutput:
		return fmt.Errorf("%w: max_output must be between 0 and %d", plugins.ErrInvalidArgument, MaxMaxOutput)
	case c.MaxOutput == 0:
		c.MaxOutput = DefaultMaxOutput
	}
	return nil
}

// Check is the exec health check.
type Check struct {
	checkutil.Base
	// Getenv reads the agent's environment (only PATH is read); tests
	// replace it.
	Getenv func(string) string
}

// New returns the exec check.
func New(log *slog.Logger) plugins.HealthCheck {
	return &Check{Base: checkutil.NewBase(log), Getenv: os.Getenv}
}

// Module registers the exec health check with offpeak's built-ins.
func Module() registry.Module[plugins.HealthCheck] {
	return registry.Module[plugins.HealthCheck]{Name: "exec", Config: func() any { return &Config{} }, New: registry.Logged(New)}
}

// Check runs the configured command once.
func (c *Check) Check(ctx context.Context, req plugins.CheckRequest) (plugins.CheckResult, error) {
	var cfg Config
	if err := plugins.DecodeConfig(req.Config, &cfg); err != nil {
		return plugins.CheckResult{}, fmt.Errorf("exec check %q: %w", req.Name, err)
	}
	if err := cfg.validate(); err != nil {
		return plugins.CheckResult{}, fmt.Errorf("exec check %q: %w", req.Name, err)
	}
	started := time.Now()
	return c.Done(ctx, "exec", req.Name, started, c.run(ctx, req, &cfg, started), slog.String("program", cfg.Argv[0])), nil
}

func (c *Check) run(ctx context.Context, req plugins.CheckRequest, cfg *Config, started time.Time) plugins.CheckResult {
	if r := httpx.CtxReason(ctx, started); r != "" {
		return c.Result(plugins.Error, r, nil)
	}
	env, path := c.environ(req, cfg)
	prog, err := lookPath(cfg.Argv[0], path)
	if err != nil {
		return c.Result(plugins.Error, fmt.Sprintf("cannot start %s: %v", cfg.Argv[0], err), nil)
	}
	dir := cfg.Dir
	if dir == "" {
		dir = "/"
	}
	out := &tailBuffer{max: cfg.MaxOutput}
	cmd := &osexec.Cmd{
		Path:        prog,
		Args:        slices.Clone(cfg.Argv),
		Env:         env,
		Dir:         dir,
		Stdout:      out,
		Stderr:      out,
		SysProcAttr: &syscall.SysProcAttr{Setpgid: true},
		WaitDelay:   waitDelay,
	}
	if err := cmd.Start(); err != nil {
		return c.Result(plugins.Error, fmt.Sprintf("cannot start %s: %v", cfg.Argv[0], unwrapPathError(err)), nil)
	}
	ctxKilled, waitErr := waitGroup(ctx, cmd)

	output := out.String()
	details := map[string]string{"duration": time.Since(started).Round(time.Millisecond).String()}
	if output != "" {
		details["output"] = output
	}
	ps := cmd.ProcessState
	if ps == nil {
		return c.Result(plugins.Error, fmt.Sprintf("%s: %v", cfg.Argv[0], waitErr), details)
	}
	ws, _ := ps.Sys().(syscall.WaitStatus)
	switch {
	case ctxKilled && ws.Signaled() && ws.Signal() == syscall.SIGKILL:
		return c.Result(plugins.Error, httpx.CtxReason(ctx, started), details)
	case ws.Exited() && ws.ExitStatus() == 0:
		return c.Result(plugins.Pass, "exit status 0", details)
	case ws.Exited():
		details["exit_code"] = strconv.Itoa(ws.ExitStatus())
		return c.Result(plugins.Fail, withOutput(fmt.Sprintf("exit status %d", ws.ExitStatus()), output), details)
	case ws.Signaled():
		details["signal"] = ws.Signal().String()
		return c.Result(plugins.Fail, withOutput("terminated by signal "+unix.SignalName(ws.Signal()), output), details)
	default:
		return c.Result(plugins.Error, fmt.Sprintf("%s: unexpected wait status %v", cfg.Argv[0], ps), details)
	}
}

// environ builds the minimal environment described in the package comment
// and returns it with the PATH it holds.
func (c *Check) environ(req plugins.CheckRequest, cfg *Config) (env []string, path string) {
	getenv := c.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	m := map[string]string{
		"PATH":            getenv("PATH"),
		"OFFPEAK_CHECK":   req.Name,
		"OFFPEAK_PHASE":   string(req.Phase),
		"OFFPEAK_NODE_ID": req.Node.ID,
		"OFFPEAK_GROUP":   req.Node.Group,
	}
	if m["PATH"] == "" {
		m["PATH"] = defaultPath
	}
	for k, v := range cfg.Env {
		m[k] = v
	}
	env = make([]string, 0, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		env = append(env, k+"="+m[k])
	}
	return env, m["PATH"]
}

// errNotFound is returned by lookPath when no PATH entry has the program.
var errNotFound = errors.New("executable file not found in PATH")

// lookPath resolves a bare name against path (the child's PATH, not the
// agent's). Names with a slash are used as given. Relative PATH entries are
// skipped so the working directory cannot inject a program.
func lookPath(name, path string) (string, error) {
	if strings.Contains(name, "/") {
		return name, nil
	}
	for _, dir := range filepath.SplitList(path) {
		if !filepath.IsAbs(dir) {
			continue
		}
		p := filepath.Join(dir, name)
		fi, err := os.Stat(p)
		if err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0 {
			return p, nil
		}
	}
	return "", errNotFound
}

func unwrapPathError(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// waitGroup waits for the started cmd, whose process leads its own group,
// and kills the whole group when ctx ends and again once the leader has
// exited. ctxKilled reports whether the kill for ctx was sent.
//
// The group may be signalled only while its leader is not yet reaped:
// until then the leader's pid (and so the group id) cannot be reused. So:
// watch ctx in a goroutine, wait for the exit without reaping, stop the
// watcher, kill what is left of the group, and only then reap.
func waitGroup(ctx context.Context, cmd *osexec.Cmd) (ctxKilled bool, err error) {
	pgid := cmd.Process.Pid // Setpgid makes the child the leader of group pgid
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		select {
		case <-ctx.Done():
			ctxKilled = true
			killGroup(pgid)
		case <-stop:
		}
	})
	waitExitNoReap(pgid)
	close(stop)
	wg.Wait()
	killGroup(pgid)
	err = cmd.Wait()
	return ctxKilled, err
}

// killGroup sends SIGKILL to every process in group pgid. ESRCH (nothing
// left) is the normal case after a clean exit.
func killGroup(pgid int) {
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
}

// waitExitNoReap blocks until process pid has exited, leaving it a zombie
// so its pid stays reserved.
func waitExitNoReap(pid int) {
	for {
		var info unix.Siginfo
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if !errors.Is(err, unix.EINTR) {
			return
		}
	}
}

// withOutput appends the last few lines of output to a reason.
func withOutput(reason, output string) string {
	lines := strings.Split(strings.TrimSpace(output), "\n")
	var kept []string
	for i := len(lines) - 1; i >= 0 && len(kept) < reasonLines; i-- {
		if l := strings.TrimSpace(lines[i]); l != "" {
			kept = append(kept, l)
		}
	}
	if len(kept) == 0 {
		return reason
	}
	slices.Reverse(kept)
	return reason + ": " + checkutil.TruncateHead(strings.Join(kept, " | "), reasonBytes)
}

// tailBuffer keeps the last max bytes written to it. stdout and stderr
// share it, so it locks.
type tailBuffer struct {
	mu        sync.Mutex
	max       int
	buf       []byte
	truncated bool
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := len(p)
	if len(p) >= t.max {
		t.truncated = t.truncated || len(t.buf) > 0 || len(p) > t.max
		t.buf = append(t.buf[:0], p[len(p)-t.max:]...)
		return n, nil
	}
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.max; over > 0 {
		t.truncated = true
		// Shift in place so the backing array stays near max bytes.
		copy(t.buf, t.buf[over:])
		t.buf = t.buf[:t.max]
	}
	return n, nil
}

// String returns the kept output as valid UTF-8, prefixed with "…" when
// earlier output was dropped.
func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := strings.ToValidUTF8(string(t.buf), "\uFFFD")
	if t.truncated {
		return "…" + s
	}
	return s
}
