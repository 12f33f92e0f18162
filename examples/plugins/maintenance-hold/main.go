// Command offpeak-plugin-maintenance-hold is an example third-party health
// check for offpeak. It fails while a hold file exists, so an operator can
// stop a node from rebooting with
//
//	echo "alice: debugging disk errors, ticket OPS-123" > /run/offpeak/maintenance-hold
//
// and let it go again by removing the file. Use it in a policy as
//
//	[[health]]
//	name = "hold"
//	plugin = "maintenance-hold"
//	phase = "pre-reboot"
//	[health.config]
//	path = "/run/offpeak/maintenance-hold"   # the default
package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/offpeak/offpeak/plugins"
)

// version is shown by `offpeak plugins list`.
const version = "0.1.0"

const defaultPath = "/run/offpeak/maintenance-hold"

type config struct {
	// Path of the hold file.
	Path string `json:"path"`
}

type hold struct {
	log *slog.Logger
	now func() time.Time
}

func (h *hold) Check(_ context.Context, req plugins.CheckRequest) (plugins.CheckResult, error) {
	cfg := config{Path: defaultPath}
	if err := plugins.DecodeConfig(req.Config, &cfg); err != nil {
		return plugins.CheckResult{}, err
	}
	if cfg.Path == "" {
		return plugins.CheckResult{}, fmt.Errorf("%w: path is empty", plugins.ErrInvalidArgument)
	}
	res := plugins.CheckResult{Time: h.now(), Details: map[string]string{"path": cfg.Path}}
	st, err := os.Stat(cfg.Path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		res.Outcome, res.Reason = plugins.Pass, "no maintenance hold"
		return res, nil
	case err != nil:
		// Cannot tell whether a hold is set: not a pass.
		res.Outcome, res.Reason = plugins.Error, fmt.Sprintf("cannot check the hold file: %v", err)
		return res, nil
	}
	res.Outcome = plugins.Fail
	res.Details["since"] = st.ModTime().UTC().Format(time.RFC3339)
	res.Reason = "maintenance hold: " + cfg.Path + " exists"
	if note := readNote(cfg.Path); note != "" {
		res.Reason = "maintenance hold: " + note
	}
	h.log.Info("hold in place", "node", req.Node.ID, "reason", res.Reason)
	return res, nil
}

// readNote returns the first line of the hold file (who and why), bounded
// so a large file cannot flood the logs.
func readNote(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	buf := make([]byte, 512)
	n, _ := f.Read(buf)
	line, _, _ := strings.Cut(string(buf[:n]), "\n")
	line = strings.TrimSpace(line)
	if !utf8.ValidString(line) {
		return ""
	}
	if len(line) > 200 {
		line = line[:200] + "…"
	}
	return line
}

func main() {
	log := plugins.NewLogger(os.Stderr, slog.LevelInfo)
	err := plugins.Serve(plugins.ServeOpts{
		Name:        "maintenance-hold",
		Version:     version,
		HealthCheck: &hold{log: log, now: time.Now},
	})
	if err != nil {
		log.Error("cannot serve", "error", err)
		os.Exit(1)
	}
}
