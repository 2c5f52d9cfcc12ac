#!/usr/bin/env bash
# The whole test suite: formatting, lints, every test of every crate, and doc tests.
# `make test` runs this after installing what the tests need.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

# Doc tests first: the suite's closing lines are then the test runner's summary.
echo "== doc tests"
cargo test --workspace --locked --doc --quiet

if cargo nextest --version >/dev/null 2>&1; then
  echo "== cargo nextest run"
  # --run-ignored all: the slow suites that boot real VMs are #[ignore]d for quick runs
  # (`cargo nextest run`), and run here.
  # The suites against a real Kubernetes cluster run only when KUBECONFIG names one.
  filter=()
  if [[ -z ${KUBECONFIG:-} ]]; then
    echo "NOT RUN: binary(cluster_api) needs a real cluster; set KUBECONFIG to run it"
    filter=(-E 'not binary(cluster_api)')
  fi
  cargo nextest run --workspace --locked --profile "${NEXTEST_PROFILE:-default}" --run-ignored all "${filter[@]}"
else
  echo "== cargo test (cargo-nextest not installed)"
  if [[ -z ${KUBECONFIG:-} ]]; then
    echo "NOT RUN: cluster_api needs a real cluster; set KUBECONFIG to run it"
    cargo test --workspace --locked --lib --bins --tests -- --include-ignored --skip ready_nodes_are_reported_at_once --skip manifests_are_applied_server_side
  else
    cargo test --workspace --locked --lib --bins --tests -- --include-ignored
  fi
fi

