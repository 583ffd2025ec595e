#!/bin/sh
# SquashFUSE single- vs multithreaded: N concurrent readers each read a whole
# tree (every file, stat + content) from one fresh mount; the page cache is
# dropped before each round. Run as root (mounts squashfuse directly).
#   bench/squash-threads.sh [ROUNDS]   (docs/design.md "SquashFS images and -W")
set -eu
ROUNDS=${1:-3}
SRC=${CH_BENCH_TREE:-/var/tmp/ch-toolkit-cache/debian-bookworm}
W=$(mktemp -d /var/tmp/sqthreads.XXXXXX)
trap 'umount -l "$W/m" 2>/dev/null || true; rm -rf "$W"' EXIT
mkdir "$W/t" "$W/m"
cp -a "$SRC/usr/bin" "$SRC/usr/share/zoneinfo" "$W/t/"
mksquashfs "$W/t" "$W/img.sqfs" -quiet -no-progress -comp zstd >/dev/null
echo "tree: $(find "$W/t" -type f | wc -l) files, $(du -sh "$W/t" | cut -f1); $(nproc) cores"
round() {   # MODE N -> wall ms
   sync; echo 3 > /proc/sys/vm/drop_caches
   if [ "$1" = st ]; then squashfuse -f -s "$W/img.sqfs" "$W/m" & else squashfuse -f "$W/img.sqfs" "$W/m" & fi
   fpid=$!
   i=0; while ! mountpoint -q "$W/m"; do i=$((i+1)); [ $i -lt 500 ] || exit 1; sleep 0.01; done
   t0=$(date +%s%N)
   n=0; pids=
   while [ $n -lt "$2" ]; do
      (find "$W/m" -type f -exec cat {} + >/dev/null) & pids="$pids $!"; n=$((n+1))
   done
   wait $pids
   t1=$(date +%s%N)
   umount "$W/m"; wait $fpid || true
   echo $(( (t1 - t0) / 1000000 ))
}
for n in 1 8 32; do
   for mode in st mt; do eval "r_${mode}_$n="; done
   r=0; while [ $r -lt "$ROUNDS" ]; do
      for mode in st mt; do v=$(round $mode $n); eval "r_${mode}_$n=\"\$r_${mode}_$n $v\""; done
      r=$((r+1))
   done
   eval "echo \"readers $n: single (-s) ms:\$r_st_$n | multi (default) ms:\$r_mt_$n\""
done
