#!/usr/bin/env bash
# Builds Wisp (release) and runs a node with the bundled examples deployed:
#   curl http://127.0.0.1:8080/hello
#   curl http://127.0.0.1:8080/users/42
#   curl -X POST -d '{"item":"book"}' http://127.0.0.1:8080/orders
#   curl http://127.0.0.1:8080/py/hello?name=ann            (a Python Lambda handler)
#   curl -X POST -d '{"item":"pen"}' http://127.0.0.1:8080/node/orders   (Node.js)
#   wisp invoke daily-report -d {}                         (a scheduled function, weekdays 09:00)
#   eval "$(wisp s3 credentials)"; aws s3 mb s3://photos; aws s3 mb s3://thumbnails
#   aws s3 cp photo.jpg s3://photos/                       (thumbnails appear in s3://thumbnails/)
# Extra arguments go to `wisp up` (e.g. --http 127.0.0.1:9080). Ctrl-C stops the node.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! rustup target list --installed | grep -qx wasm32-wasip2; then
    echo "installing the wasm32-wasip2 Rust target" >&2
    rustup target add wasm32-wasip2
fi

echo "building wisp (release; the first build takes a few minutes)" >&2
cargo build --release -p wisp-cli
target_dir="${CARGO_TARGET_DIR:-$PWD/target}"
echo "wisp is $target_dir/release/wisp; in another terminal, to use it:" >&2
echo "  cd $PWD && export PATH=\"$target_dir/release:\$PATH\"" >&2
exec "$target_dir/release/wisp" up --deploy examples/hello --deploy examples/rest-api --deploy examples/lambda --deploy examples/daily-report --deploy examples/thumbnails "$@"
