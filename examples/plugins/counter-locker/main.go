// Command offpeak-plugin-counter-locker is an EXAMPLE third-party locker for
// offpeak: a thin client of a toy JSON-over-HTTP slot service. It shows how
// a plugin maps a remote service onto plugins.Locker; it is not meant for
// production (the demo service keeps its state in memory).
//
// Run the demo service somewhere all nodes can reach:
//
//	offpeak-plugin-counter-locker serve-demo -listen 127.0.0.1:9977
//
// and point the policy at it:
//
//	[lock]
//	plugin = "counter-locker"
//	slots = 1
//	[lock.config]
//	url = "http://127.0.0.1:9977"
package main

import (
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"

	"github.com/offpeak/offpeak/plugins"
)

const version = "0.1.0"

func main() {
	if len(os.Args) > 1 && os.Args[1] == "serve-demo" {
		fs := flag.NewFlagSet("serve-demo", flag.ExitOnError)
		listen := fs.String("listen", "127.0.0.1:9977", "address of the demo slot service")
		_ = fs.Parse(os.Args[2:])
		log := slog.New(slog.NewTextHandler(os.Stderr, nil))
		log.Info("demo slot service listening (state is in memory)", "addr", *listen)
		if err := http.ListenAndServe(*listen, newService()); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		return
	}
	log := plugins.NewLogger(os.Stderr, slog.LevelInfo)
	if err := plugins.Serve(plugins.ServeOpts{Name: "counter-locker", Version: version, Locker: newLocker(log)}); err != nil {
		log.Error("cannot serve", "error", err)
		os.Exit(1)
	}
}
