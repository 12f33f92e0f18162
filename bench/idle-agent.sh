#!/bin/sh
# Idle agent: resident memory and wake-ups of `offpeak agent` with nothing
# staged, against `sleep` measured the same way in the same run. Two builds
# of the agent run side by side: the release build (`make build`: static,
# CGO_ENABLED=0, -trimpath) and a plain `go build` (cgo, maps libc).
#   bench/idle-agent.sh [SECONDS]
set -eu
secs=${1:-60}
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
pids=
trap 'kill $pids 2>/dev/null || true; rm -rf "$tmp"' EXIT
trap 'exit 1' HUP INT TERM PIPE
CGO_ENABLED=0 go build -trimpath -o "$tmp/release/offpeak" ./cmd/offpeak
go build -o "$tmp/gobuild/offpeak" ./cmd/offpeak

field() { awk -v k="$2:" '$1==k {print $2}' "/proc/$1/$3"; }
threads_switches() {
	# Every thread's wake-ups count, not only the main thread's.
	total=0
	for t in /proc/$1/task/*/status; do
		v=$(awk '$1=="voluntary_ctxt_switches:" {a=$2} $1=="nonvoluntary_ctxt_switches:" {b=$2} END {print a+b}' "$t")
		total=$((total + v))
	done
	echo $total
}

"$tmp/release/offpeak" agent --dry-run --root "$tmp/root1" --log-level warn &
rel=$!
"$tmp/gobuild/offpeak" agent --dry-run --root "$tmp/root2" --log-level warn &
gob=$!
sleep $((secs + 30)) &
base=$!
pids="$rel $gob $base"
sleep 5
r0=$(threads_switches $rel); g0=$(threads_switches $gob); b0=$(threads_switches $base)
sleep "$secs"
r1=$(threads_switches $rel); g1=$(threads_switches $gob); b1=$(threads_switches $base)

row() { # label pid switches0 switches1 binary
	printf '%-30s %9s %9s %9s %9s %11s %12s\n' "$1" "$(field $2 VmRSS status)" "$(field $2 VmHWM status)" \
		"$(field $2 Anonymous smaps_rollup)" "$(( $(field $2 Rss smaps_rollup) - $(field $2 Anonymous smaps_rollup) ))" \
		"$(echo "scale=2; ($4-$3)/$secs" | bc)" "${5:+$(( $(stat -c %s "$5") / 1024 ))}"
}
printf '%-30s %9s %9s %9s %9s %11s %12s\n' process "VmRSS kB" "VmHWM kB" "anon kB" "file kB" "wake-ups/s" "binary kB"
row "offpeak agent, release build" $rel "$r0" "$r1" "$tmp/release/offpeak"
row "offpeak agent, go build" $gob "$g0" "$g1" "$tmp/gobuild/offpeak"
row "sleep (baseline)" $base "$b0" "$b1" ""
echo "plugin processes started by the idle agents: $(( $(pgrep -P $rel | wc -l) + $(pgrep -P $gob | wc -l) ))"
echo "measured over ${secs}s after a 5s warm-up on $(nproc) CPUs, $(uname -sr), $(go version | cut -d' ' -f3)"
