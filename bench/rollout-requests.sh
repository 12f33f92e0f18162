#!/bin/sh
# Lock requests per node and simulator CPU for one single-group rollout per
# fleet size (#18): `offpeak-simulate` with 10 slots, 2 m reboots and the
# default 1 m post-boot grace, all nodes staged an hour before a daily 23 h
# window, so a rollout is one long packed run of ceil(N/10) cycles and its
# cost is the waiting, not the calendar.
#   bench/rollout-requests.sh [NODES ...]          default: 1000 5000 10000
# Environment: LOCKER=etcd|file (default etcd), SLOTS (10), REBOOT_TIME (2m),
# OUT (a directory to keep each run's JSON report and /usr/bin/time -v output).
# Needs /usr/bin/time and jq.
set -eu
locker=${LOCKER:-etcd}
slots=${SLOTS:-10}
reboot=${REBOOT_TIME:-2m}
[ $# -gt 0 ] || set -- 1000 5000 10000
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
trap 'exit 1' HUP INT TERM PIPE
out=${OUT:-$tmp}
mkdir -p "$out"
CGO_ENABLED=0 go build -trimpath -o "$tmp/offpeak-simulate" ./cmd/offpeak-simulate

cat >"$tmp/policy.toml" <<EOF
strategy = "window"

[node]
group = "fleet"

[[window]]
name = "daily"
start = "0 0 * * *"
duration = "23h"
timezone = "UTC"
cutoff = "0s"

[lock]
plugin = "$locker"
slots = $slots
EOF

# kB from a /usr/bin/time -v line, seconds as a decimal.
tv() { awk -F': ' -v k="$2" '$1 ~ k {print $2; exit}' "$1"; }

echo "load average at the start: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%7s %6s %6s %14s %9s %10s %9s %9s %9s %9s %8s\n' nodes slots locker "requests/node" max/node "requests" watches "cpu s" "wall s" "RSS MB" ratio
for n in "$@"; do
	/usr/bin/time -v -o "$out/time-$n.txt" "$tmp/offpeak-simulate" --policy "$tmp/policy.toml" \
		--nodes "$n" --slots "$slots" --reboot-time "$reboot" --locker "$locker" --output json \
		>"$out/report-$n.json"
	user=$(tv "$out/time-$n.txt" 'User time')
	sys=$(tv "$out/time-$n.txt" 'System time')
	wall=$(jq -r '.wall_time' "$out/report-$n.json")
	rss=$(tv "$out/time-$n.txt" 'Maximum resident')
	printf '%7s %6s %6s %14s %9s %10s %9s %9s %9s %9s %8s\n' "$n" "$slots" "$locker" \
		"$(printf '%.1f' "$(jq -r '.lock_requests.mean_per_node' "$out/report-$n.json")")" \
		"$(jq -r '.lock_requests.max_per_node' "$out/report-$n.json")" \
		"$(jq -r '.lock_requests.total' "$out/report-$n.json")" \
		"$(jq -r '.lock_requests.watches' "$out/report-$n.json")" \
		"$(echo "$user + $sys" | bc)" "$wall" "$((rss / 1024))" \
		"$(printf '%.3f' "$(jq -r '.ratio' "$out/report-$n.json")")"
	if [ "$(jq -r '.violations' "$out/report-$n.json")" != 0 ]; then
		echo "  $n nodes: $(jq -r '.violations' "$out/report-$n.json") invariant violation(s), see $out/report-$n.json" >&2
	fi
done
echo "ratio: makespan / ideal; cpu s: user + sys of the simulator (/usr/bin/time -v)"
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) CPUs; $(go version | cut -d' ' -f3)"
