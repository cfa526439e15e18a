#!/bin/bash
# The decode-budget burst of BENCHMARKS.md: 32 concurrent 6300x6300 PNG
# uploads to a release argusd, and its peak RSS. Needs target/release/argusd
# and /tmp/big.png (any 6300x6300 PNG; BENCHMARKS.md says how it was made).
# usage: benches/tools/decode_budget_rss.sh BUDGET_BYTES
set -u
B=$1; D=$(mktemp -d); PORT=18555
cd "$(dirname "$0")/../.."
ARGUS_LIMITS_DECODE_BUDGET_BYTES=$B ARGUS_AUTH_API_KEY_ENABLED=false ARGUS_AUTH_DETECT_PER_MINUTE=100000 ARGUS_STORAGE_ENABLED=false ARGUS_BACKEND=cpu \
  ./target/release/argusd --state-dir $D serve --listen 127.0.0.1:$PORT --tls false > $D/log 2>&1 &
P=$!
for i in $(seq 60); do curl -s 127.0.0.1:$PORT/ready >/dev/null 2>&1 && break; sleep 0.5; done
curl -s -o /dev/null -F image=@/tmp/big.png 127.0.0.1:$PORT/api/v1/detect
echo 5 > /proc/$P/clear_refs
base=$(grep VmHWM /proc/$P/status | awk '{print $2}')
start=$(date +%s.%N)
for i in $(seq 32); do curl -s -o /dev/null -w '%{http_code}\n' -F image=@/tmp/big.png 127.0.0.1:$PORT/api/v1/detect & done > $D/codes; wait_pids=$(jobs -p | grep -v "^$P$"); for w in $wait_pids; do wait $w; done
end=$(date +%s.%N)
peak=$(grep VmHWM /proc/$P/status | awk '{print $2}')
echo "budget=$B codes: $(sort $D/codes | uniq -c | tr '\n' ' ') base_hwm=$((base/1024))MB peak_hwm=$((peak/1024))MB wall=$(echo "$end - $start" | bc)s"
kill $P; wait $P 2>/dev/null; rm -rf $D
