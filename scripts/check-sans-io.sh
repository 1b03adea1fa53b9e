#!/usr/bin/env bash
# Fails if cplb-core's normal dependency tree reaches an I/O or runtime crate, or if clippy
# finds a banned clock / RNG / I/O call in it (core/clippy.toml). Run from the repo root.
set -euo pipefail
cd "$(dirname "$0")/.."

forbidden='^(tokio|libc|socket2|nix|mio|netlink[-_a-z]*|rtnetlink|rand|getrandom|async-std|smol)$'
deps=$(cargo tree -p cplb-core -e normal,build --prefix none --format '{p}' | awk '{print $1}' | sort -u)
bad=$(grep -E "$forbidden" <<<"$deps" || true)
if [[ -n "$bad" ]]; then
    echo "sans-IO violation: cplb-core depends on: $bad" >&2
    cargo tree -p cplb-core -e normal,build -i "$(head -1 <<<"$bad")" >&2 || true
    exit 1
fi
echo "sans-IO: cplb-core's $(wc -l <<<"$deps") dependencies include none of tokio, libc, socket2, nix, netlink*, rand"

# clippy reads core/clippy.toml (disallowed-methods: Instant::now, SystemTime::now, thread RNG,
# sleep; disallowed-types: sockets, files) only when run on that package.
cargo clippy -p cplb-core --all-targets --quiet -- -D warnings
echo "sans-IO: clippy finds no clock, RNG or I/O call in cplb-core"
