#!/usr/bin/env bash
# Durability over kill -9: CYCLES times, start argusd on a fresh-each-time
# process but the same state directory, keep CLIENTS uploaders sending
# /api/v1/mask for a random 1-4 s, then SIGKILL the daemon (no drain, no
# flush). Every upload answered 200 is "acknowledged"; at the end the daemon
# is started once more and every acknowledged image and job is read back,
# and the original's bytes are compared with what was sent.
#
#   scripts/durability.sh [CYCLES] [CLIENTS]      (defaults 50 and 4)
#
# Uses target/release/argusd (BIN= to change), a temporary state directory,
# HTTPS on 127.0.0.1:18463 with the self-signed certificate. Needs curl.
set -euo pipefail
CYCLES=${1:-50}
CLIENTS=${2:-4}
BIN=${BIN:-target/release/argusd}
IMG=${IMG:-tests/fixtures/group.jpg}
PORT=${PORT:-18463}
WORK=$(mktemp -d)
trap 'kill -9 $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
export ARGUS_STATE_DIR=$WORK/state ARGUS_LISTEN=127.0.0.1:$PORT
export ARGUS_AUTH_MASK_PER_MINUTE=1000000 ARGUS_LOG=warn
B=https://127.0.0.1:$PORT

KEY=$("$BIN" keys create --name durability 2>/dev/null | grep -o 'xyl_[A-Za-z0-9_-]*' | head -1)
echo 'durability-password' | "$BIN" admin create --username admin --password-stdin >/dev/null 2>&1
ACKED=$WORK/acked
: > "$ACKED"

start_daemon() {
  "$BIN" serve >>"$WORK/daemon.log" 2>&1 &
  DAEMON=$!
  for _ in $(seq 1 200); do
    curl -ks -o /dev/null "$B/live" && return 0
    sleep 0.05
  done
  echo "daemon did not start; log:" >&2
  tail -20 "$WORK/daemon.log" >&2
  exit 1
}

uploader() {
  while [ ! -e "$WORK/stop" ]; do
    local hdr=$WORK/hdr.$1
    code=$(curl -ks -o /dev/null -D "$hdr" -w '%{http_code}' -H "X-API-Key: $KEY" \
      -F "image=@$IMG" "$B/api/v1/mask" 2>/dev/null || true)
    if [ "$code" = 200 ]; then
      # image and job id of an acknowledged upload, from the answer's headers
      printf '%s\t%s\n' "$(grep -i '^x-image-id:' "$hdr" | tr -d '\r' | cut -d' ' -f2)" \
        "$(grep -i '^x-job-id:' "$hdr" | tr -d '\r' | cut -d' ' -f2)" >>"$ACKED"
    fi
  done
}

started=$(date +%s)
for c in $(seq 1 "$CYCLES"); do
  start_daemon
  rm -f "$WORK/stop"
  pids=()
  for i in $(seq 1 "$CLIENTS"); do uploader "$i" & pids+=($!); done
  sleep "$(awk -v s="$RANDOM" 'BEGIN { srand(s); printf "%.2f", 1 + 3 * rand() }')"
  kill -9 "$DAEMON"
  wait "$DAEMON" 2>/dev/null || true
  touch "$WORK/stop"
  wait "${pids[@]}" 2>/dev/null || true
  printf '\rcycle %d/%d, %d acknowledged' "$c" "$CYCLES" "$(wc -l <"$ACKED")"
done
echo

start_daemon
lost=0
mismatched=0
total=$(wc -l <"$ACKED")
while IFS=$'\t' read -r image job; do
  if ! curl -ksf -o /dev/null -u admin:durability-password "$B/api/v1/admin/jobs/$job"; then
    lost=$((lost + 1)); echo "job $job lost"; continue
  fi
  if ! curl -ksf -L -o "$WORK/back" -u admin:durability-password "$B/api/v1/admin/images/$image/download"; then
    lost=$((lost + 1)); echo "image $image lost"; continue
  fi
  cmp -s "$WORK/back" "$IMG" || { mismatched=$((mismatched + 1)); echo "image $image differs"; }
done <"$ACKED"
kill "$DAEMON"
echo "$CYCLES kill -9 cycles in $(( $(date +%s) - started )) s, $CLIENTS uploaders: $total acknowledged, $lost lost, $mismatched differ"
[ "$lost" = 0 ] && [ "$mismatched" = 0 ]
