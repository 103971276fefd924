#!/usr/bin/env bash
# Checks that today's build takes over from the previous one:
#  1. a coordinator database written by OLD opens in NEW (its runs listed
#     and shown), and
#  2. a mixed cluster works both ways: OLD coordinator + NEW workers, then
#     NEW coordinator + OLD workers, on one broker namespace (a node-by-node
#     upgrade).
# Usage: scripts/upgrade_check.sh OLD_BINARY NEW_BINARY
# (for example: git worktree add ../before <commit>, build its release
# binary, then scripts/upgrade_check.sh ../before/target/release/conveyor
# target/release/conveyor). Needs RabbitMQ on 127.0.0.1:5672 and curl.
set -euo pipefail
OLD=$1; NEW=$2
ROOT=$(cd "$(dirname "$0")/.." && pwd)
dir=$(mktemp -d /tmp/upgrade.XXXXXX); ns="upg-$$"; port=$((20000 + RANDOM % 20000))
echo "dir=$dir ns=$ns api=127.0.0.1:$port"
cp "$ROOT/examples/data/colors.csv" "$dir/colors.csv"
cat > "$dir/flow.toml" <<TOML
[flow]
name = "upg"
[tasks.extract]
kind = "extract"
path = "colors.csv"
[tasks.transform]
kind = "transform"
input = "extract"
steps = [{ drop = ["HEX"] }]
[tasks.load]
kind = "load"
input = "transform"
path = "colors-out.csv"
TOML
cfg() { # name kinds coordinator?
  local kinds=""; [ -n "$2" ] && kinds="[workers]
kinds = [$2]
input_roots = [\"$dir\"]"
  local coord=""; [ "$3" = yes ] && coord="[coordinator]
db = \"$dir/coord.db\"
[api]
listen = \"127.0.0.1:$port\""
  cat > "$dir/$1.toml" <<TOML
[node]
name = "$1"
heartbeat = "200ms"
[broker]
url = "amqp://guest:guest@127.0.0.1:5672/%2f"
namespace = "$ns"
$kinds
[storage]
artifacts = "$dir/artifacts"
output_root = "$dir/out"
$coord
TOML
}
cfg coord "" yes
cfg workers '"extract", "transform", "load"' no
cfg client "" no
start() { "$1" node --config "$dir/$2.toml" > "$dir/$2-$3.log" 2>&1 & echo $!; }
wait_api() { for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/api/v1/health" >/dev/null && return 0; sleep 0.2; done; echo "API did not answer"; return 1; }
submit() { "$1" run "$dir/flow.toml" --config "$dir/client.toml" --submit --json > "$dir/report-$2.json"; python3 -c "import json,sys; r=json.load(open('$dir/report-$2.json')); print('  run', r['flow_run'], r['state']); sys.exit(r['state']!='Succeeded')"; }
stop() { kill -TERM "$@"; wait "$@" 2>/dev/null || true; }

echo "== old coordinator + old workers: write the database"
c=$(start "$OLD" coord old); w=$(start "$OLD" workers old); wait_api; sleep 1
submit "$OLD" old1
first=$(python3 -c "import json; print(json.load(open('$dir/report-old1.json'))['flow_run'])")
echo "== old coordinator + NEW workers"
stop "$w"; w=$(start "$NEW" workers new); sleep 1
submit "$NEW" mixed1
echo "== NEW coordinator (same database) + NEW workers"
stop "$c"; c=$(start "$NEW" coord new); wait_api; sleep 1
"$NEW" runs list --server "http://127.0.0.1:$port" | tee "$dir/list.txt"
grep -q "$first" "$dir/list.txt" || { echo "FAIL: the old run is not listed"; exit 1; }
"$NEW" runs show "$first" --server "http://127.0.0.1:$port" | head -8
echo "== NEW coordinator + old workers"
stop "$w"; w=$(start "$OLD" workers old2); sleep 1
submit "$OLD" mixed2
stop "$w" "$c"
echo "OK: the old database opened in the new build, and old and new nodes ran flows together both ways"
