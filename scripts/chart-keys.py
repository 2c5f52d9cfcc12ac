#!/usr/bin/env python3
"""Lists the value keys a Helm chart knows, for the GitOps scaffold's chart-key tests.

    scripts/chart-keys.py REPO_GIT_DIR TAG CHART_DIR > crates/gitops/testdata/chart-keys/<chart>-<version>.txt

(then add a `# Repository: <URL>` line under the first), where <version> is the Application's
targetRevision, e.g. `scripts/chart-keys.py harbor-helm v1.18.0 . > .../harbor-1.18.0.txt`.

The keys are those of the chart's values.yaml (every mapping key as `a.b.c`; a mapping whose
default is empty, `{}`, takes any key and is listed as `a.b.*`) and every `.Values.a.b.c`
its templates read (keys a chart documents only in comments, such as the runner scale set's
`minRunners` or `controllerServiceAccount.name`).
"""
import re
import subprocess
import sys

import yaml


def git(repo, *args):
    return subprocess.run(["git", "-C", repo, *args], check=True, capture_output=True, text=True).stdout


def walk(value, prefix, out):
    if isinstance(value, dict):
        if not value and prefix:
            out.add(prefix + ".*")
        for key, child in value.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            out.add(path)
            walk(child, path, out)


def main():
    repo, tag, chart = sys.argv[1:4]
    chart = chart.strip("/")
    base = "" if chart in ("", ".") else f"{chart}/"
    keys = set()
    walk(yaml.safe_load(git(repo, "show", f"{tag}:{base}values.yaml")), "", keys)
    for path in git(repo, "ls-tree", "-r", "--name-only", tag, f"{base}templates/").split():
        for match in re.finditer(r"\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)", git(repo, "show", f"{tag}:{path}")):
            parts = match.group(1)[1:].split(".")
            for i in range(1, len(parts) + 1):
                keys.add(".".join(parts[:i]))
    print(f"# Value keys of the chart {chart} at {tag}: values.yaml and what its templates read (scripts/chart-keys.py).")
    for key in sorted(keys):
        print(key)


if __name__ == "__main__":
    main()
