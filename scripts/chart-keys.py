#!/usr/bin/env python3
"""Lists the value keys a Helm chart knows, for the GitOps scaffold's chart-key tests.

    scripts/chart-keys.py REPO_GIT_DIR TAG CHART_DIR > crates/gitops/testdata/chart-keys/<chart>-<version>.txt

    scripts/chart-keys.py REPO_GIT_DIR TAG CHART_DIR --subchart ALIAS SUB_REPO_GIT_DIR SUB_TAG SUB_CHART_DIR

(then add a `# Repository: <URL>` line under the first), where <version> is the Application's
targetRevision, e.g. `scripts/chart-keys.py harbor-helm v1.18.0 . > .../harbor-1.18.0.txt`.

The keys are those of the chart's values.yaml (every mapping key as `a.b.c`; a mapping whose
default is empty, `{}`, takes any key and is listed as `a.b.*`) and every `.Values.a.b.c`
its templates read (keys a chart documents only in comments, such as the runner scale set's
`minRunners` or `controllerServiceAccount.name`). A dependency chart's keys (`--subchart`, for
example kube-prometheus-stack's `grafana`) are listed under its alias, as Helm passes them.
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


def chart_keys(repo, tag, chart):
    chart = chart.strip("/")
    base = "" if chart in ("", ".") else f"{chart}/"
    keys = set()
    walk(yaml.safe_load(git(repo, "show", f"{tag}:{base}values.yaml")), "", keys)
    for path in git(repo, "ls-tree", "-r", "--name-only", tag, f"{base}templates/").split():
        for match in re.finditer(r"\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)", git(repo, "show", f"{tag}:{path}")):
            parts = match.group(1)[1:].split(".")
            for i in range(1, len(parts) + 1):
                keys.add(".".join(parts[:i]))
    return keys


def main():
    args = sys.argv[1:]
    repo, tag, chart = args[:3]
    keys = chart_keys(repo, tag, chart)
    header = f"# Value keys of the chart {chart.strip('/')} at {tag}: values.yaml and what its templates read (scripts/chart-keys.py)."
    rest = args[3:]
    while rest:
        if rest[0] != "--subchart" or len(rest) < 5:
            sys.exit("usage: chart-keys.py REPO TAG CHART [--subchart ALIAS REPO TAG CHART]...")
        alias, sub_repo, sub_tag, sub_chart = rest[1:5]
        rest = rest[5:]
        keys.add(alias)
        keys.update(f"{alias}.{k}" for k in chart_keys(sub_repo, sub_tag, sub_chart))
        header += f"\n# With the subchart {alias}: {sub_chart.strip('/')} at {sub_tag}."
    print(header)
    for key in sorted(keys):
        print(key)


if __name__ == "__main__":
    main()
