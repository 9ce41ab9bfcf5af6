#!/usr/bin/env bash
# Times 20 real containers of one local image three ways on this machine's Docker engine:
# 20 concurrent `docker run -d`, Cube (`cube up`, 20 tasks), and Docker Swarm (`--replicas 20`),
# each from the first request until all 20 are running. Prints the times and the ratios.
#
# Needs: a running Docker engine not in a swarm, the image (./scripts/echo-image.sh), and a
# release build (cargo build --release). It joins this engine to a swarm of its own for the
# Swarm run, and always leaves it and removes what it made, whatever happens (a trap).
# Not run by CI: it changes the engine's swarm state.
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-20}
IMAGE=${IMAGE:-cube/echo:latest}
CUBE=${CUBE:-target/release/cube}
PREFIX="cbench-$$"
PORT=${PORT:-5899}
DATA=$(mktemp -d)
SWARM_MADE=0
CUBE_PID=

now() { date +%s.%N; }
elapsed() { echo "$(now) - $1" | bc; }

cleanup() {
  set +e
  docker ps -aq --filter "label=cube-bench=$PREFIX" | xargs -r docker rm -f >/dev/null 2>&1
  if [ -n "$CUBE_PID" ]; then kill "$CUBE_PID" 2>/dev/null; wait "$CUBE_PID" 2>/dev/null; fi
  for n in 1 2 3; do
    docker ps -aq --filter "label=cube.worker=$PREFIX-$n" | xargs -r docker rm -f >/dev/null 2>&1
  done
  docker service rm "$PREFIX" >/dev/null 2>&1
  if [ "$SWARM_MADE" = 1 ]; then docker swarm leave --force >/dev/null 2>&1; fi
  rm -rf "$DATA"
}
trap cleanup EXIT INT TERM

state=$(docker info --format '{{.Swarm.LocalNodeState}}')
if [ "$state" != "inactive" ]; then
  echo "this engine is already part of a swarm ($state): refusing to touch it" >&2
  exit 1
fi
docker image inspect "$IMAGE" >/dev/null 2>&1 || { echo "no image $IMAGE: run ./scripts/echo-image.sh" >&2; exit 1; }
[ -x "$CUBE" ] || { echo "no $CUBE: run cargo build --release" >&2; exit 1; }

running_with_label() {
  docker ps -q --filter "label=$1" --filter status=running | wc -l
}

# 1. Concurrent docker run -d.
start=$(now)
for i in $(seq 1 "$N"); do
  docker run -d --label "cube-bench=$PREFIX" "$IMAGE" >/dev/null &
done
wait
until [ "$(running_with_label "cube-bench=$PREFIX")" -ge "$N" ]; do sleep 0.05; done
docker_run=$(elapsed "$start")
docker ps -aq --filter "label=cube-bench=$PREFIX" | xargs -r docker rm -f >/dev/null

# 2. Cube: an all-in-one cluster of 3 nodes, 20 tasks submitted at once.
export CUBE_CONFIG_DIR="$DATA/config"
"$CUBE" up --listen "127.0.0.1:$PORT" --data-dir "$DATA/cluster" --node-prefix "$PREFIX" >"$DATA/up.log" 2>&1 &
CUBE_PID=$!
until "$CUBE" node -m "127.0.0.1:$PORT" >/dev/null 2>&1; do sleep 0.1; done
TOKEN=$("$CUBE" token -m "127.0.0.1:$PORT")
start=$(now)
submits=()
for i in $(seq 1 "$N"); do
  curl -s -o /dev/null --json "{\"State\": 2, \"Task\": {\"Name\": \"b$i\", \"Image\": \"$IMAGE\"}}" \
    -H "Authorization: Bearer $TOKEN" "127.0.0.1:$PORT/tasks" &
  submits+=($!)
done
wait "${submits[@]}"  # not the cluster, also a child of this shell
count_cube() {
  curl -s -H "Authorization: Bearer $TOKEN" "127.0.0.1:$PORT/tasks?state=Running" | grep -o '"State":"Running"' | wc -l
}
until [ "$(count_cube)" -ge "$N" ]; do sleep 0.05; done
cube=$(elapsed "$start")
kill "$CUBE_PID"; wait "$CUBE_PID" 2>/dev/null || true; CUBE_PID=
for n in 1 2 3; do
  docker ps -aq --filter "label=cube.worker=$PREFIX-$n" | xargs -r docker rm -f >/dev/null 2>&1 || true
done

# 3. Docker Swarm: one service of 20 replicas.
docker swarm init --advertise-addr 127.0.0.1 >/dev/null
SWARM_MADE=1
start=$(now)
docker service create --detach --name "$PREFIX" --replicas "$N" "$IMAGE" >/dev/null
until [ "$(running_with_label "com.docker.swarm.service.name=$PREFIX")" -ge "$N" ]; do sleep 0.05; done
swarm=$(elapsed "$start")

printf '20 containers of %s until all run (one engine, one run):\n' "$IMAGE"
printf '  docker run -d x%s, concurrent: %6.2f s\n' "$N" "$docker_run"
printf '  cube (cube up, 3 nodes):      %6.2f s  (%.2fx docker run)\n' "$cube" "$(echo "$cube / $docker_run" | bc -l)"
printf '  docker swarm --replicas %s:   %6.2f s  (cube is %.2fx swarm)\n' "$N" "$swarm" "$(echo "$cube / $swarm" | bc -l)"
