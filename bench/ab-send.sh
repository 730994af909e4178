#!/bin/bash
# Times `mqft send` of a fresh random file into a `receive --once` that is already
# subscribed, alternating two mqft binaries run after run, on a Mosquitto of its own
# (default settings, loopback port 18830). Prints each run's wall time per binary.
#
#   bench/ab-send.sh OLD_MQFT NEW_MQFT [SIZE_BYTES] [RUNS] [ONE_WAY_DELAY_MS]
#
# With a delay, both clients reach the broker through bench/delay-proxy.py, which
# delays every byte by that much each way (a round trip of twice it to the broker).
#
# Each binary uses a prefix of its own, so the two never see each other's files.
set -eu
OLD=$1 NEW=$2 SIZE=${3:-5242880} RUNS=${4:-8} DELAY=${5:-0}
DIR=$(mktemp -d)
trap 'kill $(cat $DIR/pid) 2>/dev/null || true; rm -rf $DIR' EXIT
printf "listener 18830 127.0.0.1\nallow_anonymous true\nlog_type subscribe\nlog_dest file $DIR/mosq.log\npid_file $DIR/pid\n" > $DIR/mosq.conf
mosquitto -d -c $DIR/mosq.conf
PORT=18830
if [ "$DELAY" != 0 ]; then
  python3 "$(dirname "$0")/delay-proxy.py" 18831 18830 "$DELAY" &
  PROXY=$!
  trap 'kill $PROXY $(cat $DIR/pid) 2>/dev/null || true; rm -rf $DIR' EXIT
  PORT=18831
fi
sleep 0.5
for i in $(seq 1 "$RUNS"); do
  for which in old new; do
    if [ $which = old ]; then B=$OLD; else B=$NEW; fi
    head -c "$SIZE" /dev/urandom > $DIR/img-$which-$i.jpg
    OUT=$(mktemp -d -p $DIR)
    : > $DIR/mosq.log
    $B receive --once -o $OUT -p $PORT -h 127.0.0.1 --prefix ab$which >/dev/null 2>&1 &
    RX=$!
    # Until the broker logged the receiver's last subscription.
    for _ in $(seq 1 500); do grep -q "ab$which/+/\(chunk/+\|ctl\)" $DIR/mosq.log && break; sleep 0.01; done
    sleep 0.2
    S=$(date +%s.%N)
    $B send -p $PORT -h 127.0.0.1 --prefix ab$which $DIR/img-$which-$i.jpg 2>/dev/null
    E=$(date +%s.%N)
    wait $RX
    echo "$which $(echo "$E - $S" | bc)"
    rm -rf $OUT $DIR/img-$which-$i.jpg
  done
done
