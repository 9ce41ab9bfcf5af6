#!/bin/sh
# Builds the echo test program statically and imports it as the image cube/echo:latest
# (or the tag given as $1). Needs a Docker engine; needs no registry.
set -eu
cd "$(dirname "$0")/.."
tag="${1:-cube/echo:latest}"
target="$(uname -m)-unknown-linux-gnu"
RUSTFLAGS='-C target-feature=+crt-static' cargo build --quiet --release -p cube-echo \
    --target "$target" --target-dir target/echo
cargo run --quiet --release -- image-echo --binary "target/echo/$target/release/cube-echo" --tag "$tag"
