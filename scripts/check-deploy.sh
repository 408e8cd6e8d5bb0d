#!/usr/bin/env bash
# Checks deploy/: the plain manifests are the chart rendered with its own
# values (one source), and every rendered object is valid against the
# Kubernetes schemas (kubernetes-validate --strict: unknown fields fail).
# Also renders with other names and values, so a template that only works
# with the defaults fails here.
set -euo pipefail
cd "$(dirname "$0")/.."
py="${STRATA_PY:-$HOME/.cache/strata/py}/bin"
chart=deploy/helm/strata
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

"$py/python" scripts/render-chart.py "$chart" > "$out/default.yaml"
if ! diff -u deploy/manifests/strata.yaml "$out/default.yaml"; then
  echo "deploy/manifests/strata.yaml is not the chart's rendering; regenerate it with:" >&2
  echo "  python3 scripts/render-chart.py $chart > deploy/manifests/strata.yaml" >&2
  exit 1
fi
"$py/python" scripts/render-chart.py "$chart" --name prod --namespace storage \
  --set metanode.replicas=5 --set csi.sharedVolume=pvcs --set image.tag=9.9.9 > "$out/other.yaml"
grep -q "prod-master-2.prod-master.storage.svc:9100" "$out/other.yaml"
for file in "$out/default.yaml" "$out/other.yaml"; do
  # One file per document: the validator reports each by name.
  "$py/python" - "$file" "$out" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
for i, doc in enumerate(docs):
    with open(f"{sys.argv[2]}/doc-{i:02d}-{doc['kind']}.yaml", "w") as f:
        yaml.safe_dump(doc, f)
print(f"{len(docs)} objects rendered from {sys.argv[1]}")
PY
  "$py/kubernetes-validate" --strict --quiet "$out"/doc-*.yaml
  rm -f "$out"/doc-*.yaml
done
echo "deploy/: chart and manifests agree, every object is valid"
