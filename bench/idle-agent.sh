#!/bin/sh
# Idle agent: resident memory and wake-ups of `offpeak agent` with nothing
# staged, against `sleep` measured the same way in the same run.
#   bench/idle-agent.sh [SECONDS]
set -eu
secs=${1:-60}
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'kill $agent $base 2>/dev/null || true; rm -rf "$tmp"' EXIT
trap 'exit 1' HUP INT TERM PIPE
go build -o "$tmp/offpeak" ./cmd/offpeak

field() { awk -v k="$2:" '$1==k {print $2}' "/proc/$1/status"; }
switches() { echo $(( $(field "$1" voluntary_ctxt_switches) + $(field "$1" nonvoluntary_ctxt_switches) )); }
threads_switches() {
	# Every thread's wake-ups count, not only the main thread's.
	total=0
	for t in /proc/$1/task/*/status; do
		v=$(awk '$1=="voluntary_ctxt_switches:" {a=$2} $1=="nonvoluntary_ctxt_switches:" {b=$2} END {print a+b}' "$t")
		total=$((total + v))
	done
	echo $total
}

"$tmp/offpeak" agent --dry-run --root "$tmp/root" --log-level warn &
agent=$!
sleep 120 &
base=$!
sleep 5
a0=$(threads_switches $agent); b0=$(threads_switches $base)
sleep "$secs"
a1=$(threads_switches $agent); b1=$(threads_switches $base)
children=$(ls /proc/$agent/task >/dev/null 2>&1 && pgrep -P $agent | wc -l || echo 0)

printf '%-22s %10s %10s %16s\n' process "VmRSS kB" "VmHWM kB" "wake-ups/s"
printf '%-22s %10s %10s %16s\n' "offpeak agent (idle)" "$(field $agent VmRSS)" "$(field $agent VmHWM)" "$(echo "scale=2; ($a1-$a0)/$secs" | bc)"
printf '%-22s %10s %10s %16s\n' "sleep (baseline)" "$(field $base VmRSS)" "$(field $base VmHWM)" "$(echo "scale=2; ($b1-$b0)/$secs" | bc)"
echo "plugin processes started by the idle agent: $children"
echo "measured over ${secs}s after a 5s warm-up on $(nproc) CPUs, $(uname -sr), $(go version | cut -d' ' -f3)"
