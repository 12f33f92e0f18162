#!/bin/sh
# Measures `offpeak install` of an image into the passive slot of a disk
# image file against `dd bs=4M conv=fsync` of the same image to the same
# offset of an identical disk image, and against `sha256sum` of the image,
# in one run. Reports elapsed time, peak RSS and the install/dd ratio
# (target: at most 1.2).
#
# Usage: installer/gpt/bench/run.sh [SIZE_MIB] (default 1024)
# Env:   WORKDIR (default: a new directory under /var/tmp), REPEAT (default 5;
#        one more warm-up run is made and not counted)
# Needs: go, sgdisk, GNU time (/usr/bin/time), dd, sha256sum; cgpt optional.
# Heavy (writes SIZE_MIB × 2 × REPEAT MiB): not run by go test.
set -eu

size_mib=${1:-1024}
repeat=${REPEAT:-5}
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../.." && pwd)
work=${WORKDIR:-$(mktemp -d /var/tmp/offpeak-gpt-bench.XXXXXX)}
mkdir -p "$work"
trap 'rm -rf "$work"' EXIT

for tool in sgdisk dd sha256sum /usr/bin/time; do
	command -v "$tool" >/dev/null 2>&1 || { echo "missing $tool" >&2; exit 1; }
done

echo "building offpeak" >&2
(cd "$repo" && go build -o "$work/offpeak" ./cmd/offpeak)

img="$work/usr.img"
echo "making a ${size_mib} MiB image" >&2
head -c "$((size_mib * 1024 * 1024))" /dev/urandom >"$img"

# Disk layout: EFI, USR-A, USR-B (each the image size + 16 MiB), ROOT.
slot_mib=$((size_mib + 16))
disk_mib=$((8 + 2 * slot_mib + 64))
base="$work/base.img"
truncate -s "${disk_mib}M" "$base"
usr=5dfbf5f4-2848-4bac-aa5e-0d9a20b745a6
sgdisk -n 1:2048:+8M -t 1:EF00 -c 1:EFI-SYSTEM \
	-n 3:0:+"${slot_mib}M" -t 3:$usr -c 3:USR-A \
	-n 4:0:+"${slot_mib}M" -t 4:$usr -c 4:USR-B \
	-n 9:0:0 -t 9:8300 -c 9:ROOT "$base" >/dev/null
force=--force
if command -v cgpt >/dev/null 2>&1; then
	cgpt add -i 3 -P 1 -T 0 -S 1 "$base"
	force=
fi
off=$(($(sgdisk -i 4 "$base" | sed -n 's/^First sector: \([0-9]*\).*/\1/p') * 512))
sum=$(sha256sum "$img" | cut -d' ' -f1)

# Warm the page cache so every contender reads the image from memory, and
# leave nothing dirty behind.
cat "$img" >/dev/null
sync

# measure NAME CMD...: runs CMD under GNU time, prints "NAME seconds maxrss_kib".
measure() {
	name=$1
	shift
	/usr/bin/time -f "%e %M" -o "$work/time.out" "$@" >/dev/null
	echo "$name $(cat "$work/time.out")"
}

results="$work/results"
: >"$results"
i=-1
while [ "$i" -lt "$repeat" ]; do
	i=$((i + 1))
	if [ "$i" = 0 ]; then
		all="$results"
		results="$work/warmup"
	elif [ "$i" = 1 ]; then
		results="$all"
	fi
	# Each writer gets a fresh sparse copy of the same disk image and starts
	# with nothing dirty in the page cache; the order alternates by run.
	for name in $(if [ $((i % 2)) = 1 ]; then echo dd install; else echo install dd; fi); do
		rm -f "$work/$name.img"
		cp --sparse=always "$base" "$work/$name.img"
		sync
		case $name in
		dd) measure dd dd if="$img" of="$work/dd.img" bs=4M seek="$off" oflag=seek_bytes conv=fsync,notrunc status=none >>"$results" ;;
		install) measure install "$work/offpeak" install --disk "$work/install.img" --image "$img" --sha256 "$sum" --booted USR-A $force --log-level error >>"$results" ;;
		esac
	done
	measure sha256sum sha256sum "$img" >>"$results"
	got=$(dd if="$work/install.img" bs=4M skip="$off" count="$((size_mib * 1024 * 1024))" iflag=skip_bytes,count_bytes status=none | sha256sum | cut -d' ' -f1)
	[ "$got" = "$sum" ] || { echo "installed data does not match the image" >&2; exit 1; }
done

echo "image ${size_mib} MiB, ${repeat} runs, median elapsed and peak RSS:"
for name in dd sha256sum install; do
	t=$(awk -v n="$name" '$1 == n {print $2}' "$results" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
	m=$(awk -v n="$name" '$1 == n {print $3}' "$results" | sort -n | tail -1)
	printf '  %-10s %8.2f s  %8d KiB\n' "$name" "$t" "$m"
	eval "t_$name=$t"
done
awk -v i="$t_install" -v d="$t_dd" -v s="$t_sha256sum" 'BEGIN {
	printf "  install / dd            = %.2f (target <= 1.20)\n", i / d
	printf "  install / (dd + sha256sum) = %.2f\n", i / (d + s)
}'
echo "all runs:"
sed 's/^/  /' "$results"
