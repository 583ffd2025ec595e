#!/bin/sh
# squashfuse (libfuse's high-level API: what ch-run runs today) vs
# squashfuse_ll (the low-level API: what Charliecloud's ch-run links), both
# single-threaded (-s, ch-run's default on <= 2 CPUs), with libfuse's default
# cache timeouts and with long ones (the image is read-only): N concurrent
# readers on ONE mount (a shared mount's load) each read usr/bin, usr/sbin
# and usr/lib of the Debian test image (find -exec cat: metadata-heavy, ~4000
# files, 70 MB); a first pass right after mounting (the .sqfs in the page
# cache), then a warm pass on the same mount. Medians of ROUNDS, in seconds.
# Run as root (mounts squashfuse directly). See bench/squash.md.
#   bench/squash-ll.sh [ROUNDS] [READERS]
set -eu
ROUNDS=${1:-3}
N=${2:-16}
SRC=${CH_BENCH_TREE:-/var/tmp/ch-toolkit-cache/debian-bookworm}
W=$(mktemp -d /var/tmp/sqll.XXXXXX)
trap 'umount -l "$W/m" 2>/dev/null || true; rm -rf "$W"' EXIT
mkdir "$W/m"
mksquashfs "$SRC" "$W/img.sqfs" -quiet -no-progress -comp zstd >/dev/null
cat "$W/img.sqfs" >/dev/null
now() { date +%s%N; }
readers() {   # DIR -> wall ms of N readers
   t0=$(now); pids=
   i=0; while [ $i -lt "$N" ]; do
      (cd "$1" && find usr/bin usr/sbin usr/lib -type f -readable -exec cat {} + >/dev/null) & pids="$pids $!"; i=$((i+1))
   done
   wait $pids
   echo $(( ($(now) - t0) / 1000000 ))
}
round() {   # SQUASHFUSE ARGS... -> "first warm" ms
   "$@" "$W/img.sqfs" "$W/m" & fpid=$!
   i=0; while ! mountpoint -q "$W/m"; do i=$((i+1)); [ $i -lt 500 ] || exit 1; sleep 0.01; done
   a=$(readers "$W/m"); b=$(readers "$W/m")
   umount "$W/m"; wait $fpid || true
   echo "$a $b"
}
med() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
echo "$N readers on one mount, $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); medians of $ROUNDS (ms): first pass, warm pass"
: > "$W/res"
r=0; while [ $r -lt "$ROUNDS" ]; do
   for v in hl hlt ll llt; do
      case $v in
         hl) set -- squashfuse -f -s ;;
         hlt) set -- squashfuse -f -s -o entry_timeout=3600,attr_timeout=3600,negative_timeout=3600 ;;
         ll) set -- squashfuse_ll -f -s ;;
         llt) set -- squashfuse_ll -f -s -o timeout=3600 ;;
      esac
      echo "$v $(round "$@")" >> "$W/res"
   done
   echo "dir 0 $(readers "$SRC")" >> "$W/res"
   r=$((r+1))
done
for v in hl hlt ll llt dir; do
   f=$(awk -v v=$v '$1 == v { print $2 }' "$W/res" | med); w=$(awk -v v=$v '$1 == v { print $3 }' "$W/res" | med)
   case $v in
      hl) l='squashfuse -s (ch-run today)' ;; hlt) l='squashfuse -s, timeouts 3600 s' ;;
      ll) l='squashfuse_ll -s' ;; llt) l='squashfuse_ll -s, timeout 3600 s' ;; dir) l='the tree as a directory (warm)' ;;
   esac
   [ $v = dir ] && f=-
   printf '  %-34s first %6s  warm %6s\n' "$l" "$f" "$w"
done
echo "load at the end $(cut -d' ' -f1-3 /proc/loadavg)"
