#!/usr/bin/env bash
# Reads everything the test suite's tests printed (nextest's JUnit report, which keeps the
# output of passing tests too) and fails when any secret value the fixtures and tests use
# appears in it: a secret that reached a log, an error message, a Debug or a progress line.
# scripts/test.sh runs it after the tests.
#
#   scripts/secret-scan.sh target/nextest/ci/junit.xml
set -euo pipefail

report=${1:?usage: secret-scan.sh JUNIT.xml}
[[ -s $report ]] || { echo "secret-scan: no test report at $report" >&2; exit 1; }

# The secret values of the suite (fixtures and tests), as extended regular expressions. A
# test that adds a secret value adds it here. Test names never contain them.
patterns=(
  'pul-fake0123456789abcdef'        # testkit::esc_fake::TOKEN, the Pulumi token
  'pul-env-secret-value'            # an ESC token read from the environment
  'hl-s3-secret-[0-9]'              # testkit::s3, the S3 gateway's secret key
  's3cret|s3cr3t'                   # registry, Harbor and token-server passwords
  'hunter2'                         # passwords in configuration and CLI tests
  'dev-password'                    # testkit::harbor_fake::DEVELOPER
  'harbor-secret-value|robot-secret-[0-9]'
  'ghp_fake_token|ghp_file_secret_value|ghp_token'   # GitHub tokens of the runner tests
  'not-the-(secret|password)'       # wrong credentials are credentials too
  'BEGIN (OPENSSH |RSA |EC )?PRIVATE KEY'   # SSH host and client keys, TLS keys
)
joined=$(IFS='|'; echo "${patterns[*]}")

# The expression must find what it is meant to find (a typo here would pass everything).
for sample in pul-fake0123456789abcdef0123 hl-s3-secret-4242 'hunter2-harbor' \
  '-----BEGIN OPENSSH PRIVATE KEY-----' 'robot-secret-1'; do
  grep -qE -- "$joined" <<<"$sample" || { echo "secret-scan: the patterns miss $sample" >&2; exit 1; }
done

tests=$(grep -c '<testcase' "$report" || true)
if hits=$(grep -noE -- "$joined" "$report"); then
  echo "secret-scan: secret values in the output of the suite's tests ($report):" >&2
  # Which test printed each (the nearest <testcase> above the line).
  while IFS=: read -r line match; do
    name=$(head -n "$line" "$report" | grep -o '<testcase name="[^"]*" classname="[^"]*"' | tail -n 1)
    echo "  line $line: ${match:0:24}... in ${name:-?}" >&2
  done <<<"$hits"
  exit 1
fi
echo "secret-scan: no secret value in the output of $tests tests"
