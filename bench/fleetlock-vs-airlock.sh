#!/bin/bash
# FleetLock servers under contention (#18): `offpeak fleetlock serve` (etcd
# locker) and airlock, each on a fresh Debian etcd on loopback, loaded by
# bench/fleetlock-load (CLIENTS clients in one group of SLOTS slots), with the
# resident memory of each server's whole process tree (plugin children
# included) sampled during the run.
#
#   bench/fleetlock-vs-airlock.sh [AIRLOCK_CHECKOUT]
#
# AIRLOCK_CHECKOUT is a local checkout of github.com/coreos/airlock; it is
# built here with its vendored modules and never copied into this tree.
# Without it only offpeak runs, and the script says so.
#
# Environment: CLIENTS (50), SLOTS (10), DURATION (30s), HOLD (10ms),
# RETRY (10ms), ROUNDS (1; rounds alternate offpeak and airlock and the
# table shows medians), OUT (a directory to keep the reports and logs).
# Needs etcd, etcdctl, curl, jq, ss.
set -euo pipefail
airlock_src=${1:-}
clients=${CLIENTS:-50}
slots=${SLOTS:-10}
duration=${DURATION:-30s}
hold=${HOLD:-10ms}
retry=${RETRY:-10ms}
rounds=${ROUNDS:-1}
cd "$(dirname "$0")/.."
repo=$PWD
tmp=$(mktemp -d)
pids=()
cleanup() {
	for p in "${pids[@]}"; do
		kill "$p" 2>/dev/null || true
	done
	for p in "${pids[@]}"; do
		wait "$p" 2>/dev/null || true
	done
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' HUP INT TERM PIPE
out=${OUT:-$tmp/out}
mkdir -p "$out"
for cmd in etcd etcdctl curl jq ss; do
	command -v "$cmd" >/dev/null || { echo "needs $cmd" >&2; exit 2; }
done

echo "load average at the start: $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) CPUs"
CGO_ENABLED=0 go build -trimpath -o "$tmp/offpeak" ./cmd/offpeak
go build -o "$tmp/fleetlock-load" ./bench/fleetlock-load
if [ -n "$airlock_src" ]; then
	[ -f "$airlock_src/go.mod" ] || { echo "$airlock_src is not a Go module checkout" >&2; exit 2; }
	(cd "$airlock_src" && GOFLAGS=-mod=vendor GOTOOLCHAIN=local go build -o "$tmp/airlock" .)
	airlock_rev=$(git -C "$airlock_src" rev-parse --short HEAD 2>/dev/null || echo unknown)
	servers="offpeak airlock"
else
	echo "no airlock checkout given: running offpeak alone (no baseline, no ratios)"
	servers="offpeak"
fi

# A port nothing listens on (the tiny race with other programs is accepted).
free_port() {
	local p
	while :; do
		p=$((20000 + RANDOM % 40000))
		if [ -z "$(ss -Htan "( sport = :$p )")" ]; then
			echo "$p"
			return
		fi
	done
}

start_etcd() { # dir → sets etcd_url, etcd_pid
	local c p
	c=$(free_port)
	p=$(free_port)
	etcd --name bench --data-dir "$1" \
		--listen-client-urls "http://127.0.0.1:$c" --advertise-client-urls "http://127.0.0.1:$c" \
		--listen-peer-urls "http://127.0.0.1:$p" --initial-advertise-peer-urls "http://127.0.0.1:$p" \
		--initial-cluster "bench=http://127.0.0.1:$p" >"$1.log" 2>&1 &
	etcd_pid=$!
	pids+=("$etcd_pid")
	etcd_url="http://127.0.0.1:$c"
	for _ in $(seq 100); do
		etcdctl --endpoints "$etcd_url" endpoint health >/dev/null 2>&1 && return
		sleep 0.2
	done
	echo "etcd did not start, see $1.log" >&2
	exit 1
}

stop() { # pid
	kill "$1" 2>/dev/null || true
	wait "$1" 2>/dev/null || true
}

tree() { # pid and its descendants
	local c
	echo "$1"
	for c in $(pgrep -P "$1" || true); do
		tree "$c"
	done
}

tree_rss_kb() {
	local p s=0 v
	for p in $(tree "$1"); do
		v=$(awk '$1=="VmRSS:" {print $2}' "/proc/$p/status" 2>/dev/null || true)
		s=$((s + ${v:-0}))
	done
	echo "$s"
}

tree_cpu_ticks() {
	local p s=0 v
	for p in $(tree "$1"); do
		# utime and stime are fields 14 and 15; the command name may hold spaces.
		v=$(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12 + $13}' || true)
		s=$((s + ${v:-0}))
	done
	echo "$s"
}

# sample pid file: every 0.2 s the tree's summed RSS, until the file
# named stop exists.
sample() {
	local peak=0 r
	while [ ! -e "$tmp/stop-sampling" ]; do
		r=$(tree_rss_kb "$1")
		[ "$r" -gt "$peak" ] && peak=$r
		echo "$peak" >"$2"
		sleep 0.2
	done
}

wait_http() { # url
	for _ in $(seq 150); do
		code=$(curl -s -o /dev/null -w '%{http_code}' -H 'fleet-lock-protocol: true' \
			-d '{"client_params":{"id":"bench-probe","group":"bench"}}' "$1/v1/steady-state" || true)
		[ "$code" != 000 ] && return
		sleep 0.2
	done
	echo "server at $1 did not answer" >&2
	exit 1
}

run_one() { # server round
	local name=$1 round=$2 dir="$tmp/$1-$2" port url spid
	mkdir -p "$dir/root"
	start_etcd "$dir/etcd"
	port=$(free_port)
	url="http://127.0.0.1:$port"
	case $name in
	offpeak)
		cat >"$dir/policy.toml" <<EOF
# Windows are not what is measured: strategy etcd-lock grants at any time.
strategy = "etcd-lock"

[lock]
plugin = "etcd"
slots = $slots

[lock.groups]
bench = $slots

[lock.config]
endpoints = ["$etcd_url"]
EOF
		"$tmp/offpeak" --root "$dir/root" fleetlock serve --listen "127.0.0.1:$port" \
			--policy "$dir/policy.toml" >"$out/$name-$round.log" 2>&1 &
		;;
	airlock)
		cat >"$dir/config.toml" <<EOF
[status]
enabled = false

[service]
address = "127.0.0.1"
port = $port
tls = false

[etcd3]
endpoints = ["$etcd_url"]

[lock]
default_group_name = "bench"
default_slots = $slots
EOF
		"$tmp/airlock" serve -c "$dir/config.toml" >"$out/$name-$round.log" 2>&1 &
		;;
	esac
	spid=$!
	pids+=("$spid")
	wait_http "$url"
	rm -f "$tmp/stop-sampling"
	sample "$spid" "$dir/peak" &
	local sampler=$!
	pids+=("$sampler")
	local cpu0 cpu1 rss_start rss_end nproc_tree
	rss_start=$(tree_rss_kb "$spid")
	cpu0=$(tree_cpu_ticks "$spid")
	"$tmp/fleetlock-load" --url "$url" --group bench --clients "$clients" --slots "$slots" \
		--duration "$duration" --hold "$hold" --retry "$retry" --json "$out/$name-$round.json" \
		>"$out/$name-$round.txt"
	cpu1=$(tree_cpu_ticks "$spid")
	rss_end=$(tree_rss_kb "$spid")
	nproc_tree=$(tree "$spid" | wc -l)
	touch "$tmp/stop-sampling"
	wait "$sampler" || true
	local peak
	peak=$(cat "$dir/peak" 2>/dev/null || echo 0)
	[ "$rss_end" -gt "$peak" ] && peak=$rss_end
	local hz
	hz=$(getconf CLK_TCK)
	jq --argjson peak "$peak" --argjson rstart "$rss_start" --argjson rend "$rss_end" --argjson procs "$nproc_tree" \
		--argjson cpu "$(echo "scale=2; ($cpu1 - $cpu0) / $hz" | bc)" \
		'. + {server: {rss_before_kb: $rstart, rss_peak_kb: $peak, rss_end_kb: $rend, processes: $procs, cpu_s: $cpu}}' \
		"$out/$name-$round.json" >"$out/$name-$round.full.json"
	echo "== $name, round $round (server tree: $nproc_tree process(es), RSS peak $((peak / 1024)) MB, end $((rss_end / 1024)) MB)"
	cat "$out/$name-$round.txt"
	stop "$spid"
	stop "$etcd_pid"
}

for r in $(seq "$rounds"); do
	for s in $servers; do
		run_one "$s" "$r"
	done
done

# median NAME JQ-EXPR: the median over the rounds.
median() {
	jq -s "map($2) | sort | .[(length - 1) / 2 | floor]" "$out/$1"-*.full.json
}
row() { # label jq-expr format
	local o a
	o=$(median offpeak "$2")
	if [ "$servers" = offpeak ]; then
		printf "%-34s %12s\n" "$1" "$(printf "$3" "$o")"
		return
	fi
	a=$(median airlock "$2")
	printf "%-34s %12s %12s %10s\n" "$1" "$(printf "$3" "$o")" "$(printf "$3" "$a")" \
		"$(if [ "$(echo "$a == 0" | bc)" = 1 ]; then echo -; else printf '%.2f×' "$(echo "scale=4; $o / $a" | bc)"; fi)"
}
echo
echo "$clients clients, $slots slots, hold $hold, retry $retry, $duration per run, $rounds round(s)$([ "$rounds" -gt 1 ] && echo ', medians')"
if [ "$servers" = offpeak ]; then
	printf "%-34s %12s\n" "" "offpeak"
else
	printf "%-34s %12s %12s %10s\n" "" "offpeak" "airlock" "ratio"
fi
row "grants/s" '.grants_per_s' '%.1f'
row "requests/s" '.requests_per_s' '%.0f'
row "request p50 ms (all)" '.latency_ms.all.p50' '%.1f'
row "request p99 ms (all)" '.latency_ms.all.p99' '%.1f'
row "pre-reboot p50 ms" '.latency_ms["pre-reboot"].p50' '%.1f'
row "pre-reboot p99 ms" '.latency_ms["pre-reboot"].p99' '%.1f'
row "steady-state p50 ms" '.latency_ms["steady-state"].p50' '%.1f'
row "steady-state p99 ms" '.latency_ms["steady-state"].p99' '%.1f'
row "wait for a grant p50 ms" '.grant_wait_ms.p50' '%.1f'
row "wait for a grant p99 ms" '.grant_wait_ms.p99' '%.1f'
row "5xx answers" '.http_5xx' '%d'
row "5xx other than \"slots full\"" '.http_5xx_not_full' '%d'
row "transport errors" '.transport_errors' '%d'
row "holders at once (surely)" '.holders_at_once.surely_max' '%d'
row "server RSS before the load MB" '.server.rss_before_kb / 1024' '%.1f'
row "server RSS peak MB (process tree)" '.server.rss_peak_kb / 1024' '%.1f'
row "server RSS at end MB" '.server.rss_end_kb / 1024' '%.1f'
row "server processes" '.server.processes' '%d'
row "server CPU s" '.server.cpu_s' '%.1f'
row "server CPU ms per grant" '.server.cpu_s * 1000 / .grants_all' '%.2f'
echo "ratio: offpeak / airlock. airlock answers a full group with 500 failed_lock, offpeak with 409."
echo "holders at once is the clients' view (see fleetlock-load): a check, not a proof."
[ -n "$airlock_src" ] && echo "airlock: $airlock_src at $airlock_rev, built with -mod=vendor"
echo "etcd $(etcd --version | awk '/etcd Version/ {print $3}'), $(go version | cut -d' ' -f3); load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
