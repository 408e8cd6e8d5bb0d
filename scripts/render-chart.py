#!/usr/bin/env python3
"""Renders deploy/helm/strata the way `helm template` does, for the subset
of Go templates the chart allows itself: `{{ .Values.a.b }}`,
`{{ .Release.Name }}`, `{{ .Release.Namespace }}`, `{{ .Chart.AppVersion }}`.
Any other template action is an error, so the chart stays renderable by
both, and deploy/manifests/strata.yaml (this rendering with the chart's
values) stays one source with the chart.

usage: render-chart.py CHART_DIR [--name strata] [--namespace strata] [--set a.b=value ...]
"""
import argparse
import pathlib
import re
import sys

import yaml

ACTION = re.compile(r"\{\{-?\s*(.*?)\s*-?\}\}")


def lookup(values, dotted, source):
    node = values
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            sys.exit(f"{source}: no value .Values.{dotted}")
        node = node[part]
    if isinstance(node, (dict, list)):
        sys.exit(f"{source}: .Values.{dotted} is not a scalar")
    if isinstance(node, bool):
        return "true" if node else "false"
    return str(node)


def render(chart, name, namespace, values):
    meta = yaml.safe_load((chart / "Chart.yaml").read_text())
    documents = []
    for template in sorted((chart / "templates").glob("*.yaml")):
        text = template.read_text()

        def substitute(match):
            action = match.group(1)
            if action == ".Release.Name":
                return name
            if action == ".Release.Namespace":
                return namespace
            if action == ".Chart.AppVersion":
                return str(meta["appVersion"])
            if action.startswith(".Values.") and re.fullmatch(r"\.Values(\.[A-Za-z0-9_]+)+", action):
                return lookup(values, action[len(".Values."):], template.name)
            sys.exit(f"{template.name}: template action {{{{ {action} }}}} is outside the subset this chart allows")

        documents.append(f"# Source: strata/templates/{template.name}\n" + ACTION.sub(substitute, text).strip() + "\n")
    return "---\n".join(documents)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("chart", type=pathlib.Path)
    parser.add_argument("--name", default="strata")
    parser.add_argument("--namespace", default="strata")
    parser.add_argument("--set", action="append", default=[], help="a.b=value overrides")
    args = parser.parse_args()
    values = yaml.safe_load((args.chart / "values.yaml").read_text())
    for override in args.set:
        key, _, value = override.partition("=")
        node = values
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    rendered = render(args.chart, args.name, args.namespace, values)
    # Every document must parse: a substitution never breaks the YAML.
    list(yaml.safe_load_all(rendered))
    sys.stdout.write(rendered)


if __name__ == "__main__":
    main()
