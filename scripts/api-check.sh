#!/usr/bin/env bash
# Semver discipline for the library crates: each crate's public API now is compared with the
# API of the last release (the commit in .api-baseline) by cargo-semver-checks, which fails
# when a change needs a bigger version bump than [workspace.package] version got (before 1.0
# a breaking change needs a minor bump: 0.1 -> 0.2). `make api-check` runs it; it is not part
# of `make test` because building the tool takes 26 minutes on a loaded 2-core machine and
# the check about 70 s per crate (measured; see README).
#
#   scripts/api-check.sh [CRATE...]      (default: every library crate under crates/)
set -euo pipefail
cd "$(dirname "$0")/.."

# Libraries leave the Kubernetes version to programs; a crate built alone names one.
export K8S_OPENAPI_ENABLED_VERSION=1.33

if ! cargo semver-checks --version >/dev/null 2>&1; then
  echo "installing cargo-semver-checks from crates.io (a release build: many minutes, once)"
  cargo install --locked cargo-semver-checks
fi

baseline=$(grep -v '^#' .api-baseline | head -n 1 | tr -d '[:space:]')
if ! git cat-file -e "$baseline^{commit}" 2>/dev/null; then
  echo ".api-baseline names $baseline, which is not a commit of this repository" >&2
  exit 2
fi

crates=("$@")
if [[ ${#crates[@]} -eq 0 ]]; then
  mapfile -t crates < <(cargo metadata --no-deps --format-version 1 --locked |
    python3 -c '
import json, sys
for p in json.load(sys.stdin)["packages"]:
    if "/crates/" in p["manifest_path"] and p["name"] != "homelab-testkit":
        print(p["name"])')
fi

failed=()
for crate in "${crates[@]}"; do
  echo "== $crate against $baseline"
  if ! cargo semver-checks --package "$crate" --baseline-rev "$baseline"; then
    failed+=("$crate")
  fi
done
if [[ ${#failed[@]} -gt 0 ]]; then
  echo "the public API changed more than the version says: ${failed[*]}" >&2
  echo "bump [workspace.package] version (and the workspace dependencies' versions), and say what changed in CHANGELOG.md" >&2
  exit 1
fi
echo "every library crate's API change fits its version"
