#!/usr/bin/env bash
# Installs the system packages the build and the tests need, only when one is missing.
# Safe to run again: it changes nothing when everything is present.
#
#   scripts/deps.sh            packages for building and for the test suite
#   scripts/deps.sh --check    only report what is missing (exit 1 if anything is)
set -euo pipefail

# One package per line: Debian package name, then the command or file that proves it is there.
PACKAGES=(
  "pkg-config:pkg-config"
  "make:make"
  "libvirt-dev:/usr/include/libvirt/libvirt.h"
)

missing=()
for entry in "${PACKAGES[@]}"; do
  pkg=${entry%%:*}
  probe=${entry#*:}
  if [[ $probe == /* ]]; then
    [[ -e $probe ]] || missing+=("$pkg")
  else
    command -v "$probe" >/dev/null 2>&1 || missing+=("$pkg")
  fi
done

if ! command -v cargo >/dev/null 2>&1; then
  echo "deps: cargo is not installed; install Rust first: https://rustup.rs" >&2
  exit 1
fi

if [[ ${#missing[@]} -eq 0 ]]; then
  echo "deps: all system packages present"
  exit 0
fi

if [[ ${1:-} == --check ]]; then
  echo "deps: missing: ${missing[*]}" >&2
  exit 1
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "deps: missing ${missing[*]} and apt-get is not available; install them with your package manager" >&2
  exit 1
fi

sudo=()
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null 2>&1 || { echo "deps: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  sudo=(sudo)
fi

echo "deps: installing ${missing[*]}"
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
