#!/bin/bash
# The 10x sets of BENCHMARKS.md ("Overload"): one release argusd on its
# defaults (HTTPS, storage on, per-key limit raised), a closed-loop warm-up,
# then closed(8 clients) and N times [open RATE/s for 15 s, closed(8)];
# prints each open run's goodput as a share of the closed-loop runs either
# side, and the host's steal time during it. Extra ARGUS_* settings pass
# through the environment (e.g. ARGUS_BATCH_QUEUE_DEPTH=12).
# usage: benches/tools/overload_sets.sh [ARGUSD_BINARY]   (N=3 RATE=500 PORT=18443)
# RATE=auto offers 10 times the first closed-loop rate. LOG=FILE keeps the
# load tool's whole output (latencies, 429s) and the daemon's peak RSS.
# Needs target/release/examples/load (cargo build --release --example load),
# or the load tool named by LOAD.
set -u
cd "$(dirname "$0")/../.."
BIN=${1:-./target/release/argusd}; N=${N:-3}; RATE=${RATE:-500}; PORT=${PORT:-18443}
D=$(mktemp -d)
K=$($BIN --state-dir $D keys create --name load 2>&1 | grep -o 'xyl_[A-Za-z0-9_-]*' | head -1)
ARGUS_AUTH_DETECT_PER_MINUTE=1000000 $BIN --state-dir $D serve --listen 127.0.0.1:$PORT > $D/log 2>&1 &
P=$!
trap 'kill $P 2>/dev/null; while kill -0 $P 2>/dev/null; do sleep 0.2; done; rm -rf $D' EXIT
for i in $(seq 120); do curl -sk https://127.0.0.1:$PORT/ready >/dev/null 2>&1 && break; sleep 0.5; done
L="${LOAD:-./target/release/examples/load} --url https://127.0.0.1:$PORT --key $K"
LOG=${LOG:-/dev/null}
field() { awk -v f="$1" '{for(i=1;i<=NF;i++) if($i==f) print $(i+1)}' | tr -d '/s'; }
closed() { $L --concurrency 8 --requests 500 --pid $P 2>&1 | tee -a "$LOG" | grep closed | field images/s; }
steal() { awk '/^cpu /{print $9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat; }
$L --concurrency 8 --requests 200 > /dev/null 2>&1
c=$(closed); line="closed $c"
[ "$RATE" = auto ] && RATE=$(python3 -c "print(round(10*$c))")
line="$line | offered $RATE/s"
for i in $(seq $N); do
  s0=$(steal); o=$($L --rate $RATE --max-seconds 15 --pid $P 2>&1 | tee -a "$LOG" | grep "open rate" | field goodput); s1=$(steal)
  c2=$(closed)
  line="$line | open $o ($(python3 -c "a='$s0'.split();b='$s1'.split();print(round(100*(int(b[0])-int(a[0]))/max(1,int(b[1])-int(a[1])),1))")% steal) = $(python3 -c "print(round(100*$o/(($c+$c2)/2),1))")% | closed $c2"
  c=$c2
done
echo "$line"
