#!/bin/sh
# The benchmark campaign behind docs/benchmarks.md: every scenario against our
# server with 1, 2 and 4 workers and against ngIRCd (when installed), one after
# the other, each run bounded (about 1-2 minutes). Appends JSON lines to $OUT;
# render them with: python -m loadtest.bench report $OUT
#
#   sh loadtest/campaign.sh [OUT] [SERVER_ROOT]
#
# SERVER_ROOT: run our server from that checkout (e.g. a `git archive` export of
# one commit) instead of this work tree.
set -u
OUT=${1:-benchmarks.jsonl}
ROOT=${2:-}
PY=${PYTHON:-python}
B="$PY -m loadtest.bench"
ROOTARG=""
[ -n "$ROOT" ] && ROOTARG="--server-root $ROOT"
TARGETS="--workers=1 --workers=2 --workers=4"
command -v ngircd >/dev/null 2>&1 || [ -x /usr/sbin/ngircd ] && TARGETS="$TARGETS --ngircd"
for t in $TARGETS; do
  case $t in --ngircd) R="";; *) R=$ROOTARG;; esac
  $B fanout $t $R --clients 1000 --senders 10 --rates 500,1000,2000,3000,4000,5500,7000 --duration 5 --out "$OUT"
  $B rooms $t $R --clients 1000 --channels 100 \
     --rates 4000,8000,12000,16000,20000,24000,28000,32000,36000,40000,45000 --duration 5 --out "$OUT"
  $B churn $t $R --rates 250,500,1000,1500,2000,2500,3000,4000,6000 --duration 5 --out "$OUT"
  case $t in
    --workers=4) $B connections $t $R --clients 50000 --ramp 600 --hold 60 --out "$OUT";;
    *) $B connections $t $R --clients 20000 --ramp 600 --hold 30 --out "$OUT";;
  esac
done
