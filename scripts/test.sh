#!/usr/bin/env bash
# The whole test suite: formatting, lints, every test of every crate, and doc tests.
# `make test` runs this after installing what the tests need.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== each library crate alone, with its default features and with none"
scripts/crates-alone.sh

# Doc tests first: the suite's closing lines are then the test runner's summary.
echo "== doc tests"
cargo test --workspace --locked --doc --quiet

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "cargo-nextest is not installed: run scripts/deps.sh (make test does)" >&2
  exit 1
fi
echo "== cargo nextest run"
# --run-ignored all: the slow suites that boot real VMs are #[ignore]d for quick runs
# (`cargo nextest run`), and run here.
# The cluster_api suites run against a real API server the tests start on loopback (etcd
# and a kube-apiserver built by scripts/deps.sh), or against the cluster KUBECONFIG names.
# The real-VM suite runs as its cluster scenario (real_vms_cluster_ready: every layer, the
# cluster brought to every node Ready included; about 28 minutes under software emulation on
# two cores). Its twin without the cluster (real_vms_apply_reapply_interrupt_destroy, `make
# test-vms`) checks nothing the scenario does not, so it is left out rather than booting the
# same VMs a second time.
# The real Pulumi ESC test runs only with a token and an environment to read (read-only).
filter='not test(=real_vms_apply_reapply_interrupt_destroy)'
if [[ -n "${PULUMI_ACCESS_TOKEN:-}" && -n "${HOMELAB_ESC_ENV:-}" ]]; then
  echo "real ESC: reading $HOMELAB_ESC_ENV"
else
  echo "skipped (not run, not counted): real_esc_environment_is_listed_opened_once_and_checked;" \
    "set PULUMI_ACCESS_TOKEN and HOMELAB_ESC_ENV=organization/project/environment to run it"
  filter="$filter and not test(=real_esc_environment_is_listed_opened_once_and_checked)"
fi
# A real Kind cluster needs kind and a container engine.
if command -v kind >/dev/null && { command -v docker >/dev/null || command -v podman >/dev/null; }; then
  echo "real Kind: kind and a container engine are here"
else
  echo "skipped (not run, not counted): real_kind_up_status_destroy; it needs kind and docker or podman on the PATH"
  filter="$filter and not test(=real_kind_up_status_destroy)"
fi
cargo nextest run --workspace --locked --profile "${NEXTEST_PROFILE:-default}" --run-ignored all \
  -E "$filter"

# The library crates' example programs, each run on something real (scripts/examples.sh).
scripts/examples.sh

echo "== secret scan of everything the tests printed"
scripts/secret-scan.sh "target/nextest/${NEXTEST_PROFILE:-default}/junit.xml"

