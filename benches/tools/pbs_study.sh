#!/usr/bin/env bash
# End-to-end PBS study against a running argusd: the batch sizes the
# batchers formed and the study's duration, from /metrics.
#
#   ARGUS_TLS=false ARGUS_LISTEN=127.0.0.1:18443 ARGUS_STATE_DIR=/tmp/argus-bench argusd serve &
#   benches/tools/pbs_study.sh http://127.0.0.1:18443 /tmp/argus-bench PHOTO...
#
# Needs curl, jq, sha256sum. Creates organisation "bench" with user bench@bench.test.
set -euo pipefail
H=$1; STATE=$2; shift 2
BIN=${ARGUSD:-target/release/argusd}
PW='bench password 1'
echo "$PW" | "$BIN" --state-dir "$STATE" pbs users add --org bench --user bench@bench.test --role user --password-stdin >/dev/null
HASH=$(echo -n "$PW" | sha256sum | cut -d' ' -f1)
T=$(curl -s "$H/auth/login" -d "{\"user\":\"bench@bench.test\",\"pass_hash\":\"$HASH\"}" | jq -r .results.token.HY_APP_AUTH_v1)
ID=$(curl -s "$H/pbs" -H "Authorization: $T" -d '{}' | jq -r .results.pbs_study_id)
for f in "$@"; do
  curl -s "$H/pbs/$ID/files?file_name=$(basename "$f")" -H "Authorization: $T" --data-binary @"$f" >/dev/null
done
start=$(date +%s.%N)
curl -s "$H/pbs/$ID/tasks" -H "Authorization: $T" -d '{"diagnostic_tasks":["CBC_COUNTS","MALARIA_ANY_ANY"]}' >/dev/null
until [ "$(curl -s "$H/pbs/$ID/status" -H "Authorization: $T" | jq -r .results.report_status)" = ready ]; do sleep 0.2; done
end=$(date +%s.%N)
n=$#
echo "photos: $n  seconds: $(echo "$end - $start" | bc)  photos/s: $(echo "scale=3; $n / ($end - $start)" | bc)"
curl -s "$H/pbs/$ID/report/CBC_COUNTS" -H "Authorization: $T" | jq -c '.results.report.CBC_COUNTS | {rbc, wbc, platelets}'
curl -s "$H/pbs/$ID/report/MALARIA_ANY_ANY" -H "Authorization: $T" | jq -c '.results.report.MALARIA_ANY_ANY | {positive_count, negative_count}'
curl -s "$H/metrics" | grep -E '^argus_batch_size_(sum|count)|^argus_inference_duration_seconds_(sum|count)' | grep -E 'cbc_unet|malaria_cnn'
