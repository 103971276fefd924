#!/usr/bin/env bash
# Runs Conveyor's whole test suite: lint checks, unit tests, and the
# integration tests against a real RabbitMQ and a real PostgreSQL. Installs
# and starts RabbitMQ (Debian's rabbitmq-server) when nothing listens on the
# test broker's port, PostgreSQL (Debian's postgresql, with trust auth for
# local TCP) when nothing listens on 127.0.0.1:5432, and Debian's chromium
# and chromium-driver (for the dashboard's browser tests) when either is
# missing.
#
#   scripts/test.sh            # everything
#   scripts/test.sh cluster    # only tests whose name contains "cluster"
#
# CONVEYOR_TEST_AMQP_URL points the tests at another broker, and
# CONVEYOR_TEST_PG_URL at another PostgreSQL server (a URL of a database the
# user may CREATE DATABASE from; each test creates and drops one of its own).
set -euo pipefail
cd "$(dirname "$0")/.."

url="${CONVEYOR_TEST_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}"
hostport="${url#*://}"; hostport="${hostport#*@}"; hostport="${hostport%%/*}"
host="${hostport%%:*}"; port="${hostport##*:}"; [ "$port" = "$host" ] && port=5672

broker_up() { (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; }

if ! broker_up; then
  if [ "$host" != "127.0.0.1" ] && [ "$host" != "localhost" ]; then
    echo "test.sh: no broker at $host:$port and it is not local; start it or fix CONVEYOR_TEST_AMQP_URL" >&2
    exit 1
  fi
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  if ! command -v rabbitmq-server >/dev/null 2>&1; then
    echo "test.sh: installing rabbitmq-server" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq rabbitmq-server >/dev/null
  fi
  echo "test.sh: starting RabbitMQ" >&2
  $sudo rabbitmq-server -detached || true
  for _ in $(seq 1 120); do broker_up && break; sleep 1; done
  broker_up || { echo "test.sh: RabbitMQ did not open port $port within 120 s" >&2; exit 1; }
fi
echo "test.sh: broker reachable at $host:$port" >&2

# The dashboard's tests (tests/dashboard.rs) drive a real headless Chromium
# through chromedriver. Debian's chromium and chromium-driver provide both.
if ! command -v chromedriver >/dev/null 2>&1 || ! command -v chromium >/dev/null 2>&1; then
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "test.sh: installing chromium and chromium-driver" >&2
  install_chromium() { DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium chromium-driver >/dev/null; }
  # Refresh the package lists only when they are missing or stale (the
  # install fails on a version the mirror no longer has).
  if ! apt-cache show chromium chromium-driver >/dev/null 2>&1 || ! install_chromium; then
    $sudo apt-get update -qq
    install_chromium
  fi
fi
echo "test.sh: $(chromium --version 2>/dev/null || echo 'chromium ?'), $(chromedriver --version 2>/dev/null | cut -d' ' -f1-2)" >&2
pg_up() { (exec 3<>"/dev/tcp/127.0.0.1/5432") 2>/dev/null; }
if [ -z "${CONVEYOR_TEST_PG_URL:-}" ] && ! pg_up; then
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  if ! command -v pg_ctlcluster >/dev/null 2>&1; then
    echo "test.sh: installing postgresql" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq postgresql >/dev/null
  fi
  cluster="$(pg_lsclusters -h | awk 'NR==1 {print $1" "$2}')"
  if [ -z "$cluster" ]; then
    version="$(ls /usr/lib/postgresql | sort -V | tail -1)"
    $sudo pg_createcluster "$version" main >/dev/null
    cluster="$version main"
  fi
  pgver="${cluster% *}"; pgname="${cluster#* }"
  conf="/etc/postgresql/$pgver/$pgname"
  # Trust for local TCP only: a test server, reachable from this host alone.
  if ! $sudo grep -q "^host all all 127.0.0.1/32 trust" "$conf/pg_hba.conf"; then
    # First match wins: these lines go on top. `cat >` keeps the file's owner.
    hba="$conf/pg_hba.conf"
    printf 'host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\n' |
      $sudo sh -c "cat - '$hba' > '$hba.new' && cat '$hba.new' > '$hba' && rm '$hba.new'"
  fi
  echo "test.sh: starting PostgreSQL $pgver/$pgname" >&2
  $sudo pg_ctlcluster "$pgver" "$pgname" start || $sudo pg_ctlcluster "$pgver" "$pgname" reload
  for _ in $(seq 1 60); do pg_up && break; sleep 1; done
  pg_up || { echo "test.sh: PostgreSQL did not open port 5432 within 60 s" >&2; exit 1; }
fi
echo "test.sh: PostgreSQL reachable" >&2

# One feature set for clippy, the build and the tests: building the binary
# alone (`-p conveyor-node`) resolves its dependencies' features without the
# tests' dev-dependencies, which compiles arrow and DataFusion a second time.
features=(--workspace --features conveyor-node/failpoints)
cargo fmt --all -- --check
cargo clippy "${features[@]}" --all-targets --quiet -- -D warnings
# The integration tests run the real `conveyor` binary. `cargo test` builds
# test harnesses, not the binaries of other packages, so build it first.
# The fault tests need failpoints, which release builds do not have.
cargo build "${features[@]}" --all-targets --quiet
# --show-output prints the one-line report of each fault scenario.
cargo test "${features[@]}" "$@" -- --show-output
