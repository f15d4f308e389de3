#!/usr/bin/env bash
# One pipeline PER CAMERA (capture, inference and post-processing processes each), each publishing on
# its own port. For N cameras that share a model, use ONE pipeline instead: launch/cameras.yaml (one
# model in memory, batched inference, streams added and removed while running; tools/bench_streams.py
# measures the difference). This script remains for what one pipeline cannot do:
#   * cameras that need different models, backends or settings (a CONFIG per run, e.g. a surveillance
#     camera with configs/surveillance.yaml beside the vehicle's cameras), or one pipeline per GPU;
#   * isolation: a pipeline's failed inference stage stops only its own camera;
#   * the baseline of tools/bench_streams.py's comparison, by hand.
# Ctrl-C or SIGTERM stops them all; if one pipeline exits with an error, the others are stopped and
# this script exits with that pipeline's code.
#
#   launch/multi_camera.sh camera:0 camera:1                 # ids cam0, cam1; ports 5555, 5556
#   launch/multi_camera.sh front=camera:0 rear=rtsp://a/x    # [ID=]SRC as in perception run --source
#   BASE_PORT=6000 CONFIG=configs/camera.yaml launch/multi_camera.sh rtsp://a/x rtsp://b/y
#
# Pipelines bind 127.0.0.1 (HOST): only this host can read them. HOST=0.0.0.0 serves the network;
# do that with CURVE on (publish.curve in CONFIG, see configs/camera.yaml), else every host that can
# reach the ports reads the streams and the pipelines print a warning.
set -uo pipefail
cd "$(dirname "$0")/.."
PERCEPTION=${PERCEPTION:-.venv/bin/perception}
CONFIG=${CONFIG:-configs/camera.yaml}
BASE_PORT=${BASE_PORT:-5555}
HOST=${HOST:-127.0.0.1}
[ $# -ge 1 ] || { echo "usage: $0 SOURCE [SOURCE ...]" >&2; exit 2; }

pids=()
stop_all() { for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done; }
trap 'stop_all; wait; exit 130' INT TERM

i=0
for src in "$@"; do
  port=$((BASE_PORT + i))
  cam="cam$i"
  if [[ $src =~ ^([A-Za-z0-9_-]+)=(.+)$ ]]; then cam=${BASH_REMATCH[1]}; src=${BASH_REMATCH[2]}; fi
  "$PERCEPTION" run "$CONFIG" --source "$cam=$src" --publish "tcp://$HOST:$port" &
  pids+=($!)
  echo "camera $cam ($src) -> tcp://$HOST:$port (pid $!)" >&2
  i=$((i + 1))
done

# the first pipeline to end decides: stop the rest and pass its exit code on
wait -n "${pids[@]}"; code=$?
stop_all; wait
exit "$code"
