#!/usr/bin/env python3
"""What a Prometheus server saw of a Strata cluster during a run (the
figures docs/PERFORMANCE.md quotes for a `strata bench` run watched live):
request counts, peak rates and p99 latencies per operation, datanode bytes,
Raft proposal and log-write latency, cache hit ratios, errors by code,
memory and CPU per role. The run is the time the mount was scraped.

    python3 scripts/prometheus-summary.py http://127.0.0.1:9090 START_UNIX OUT.json
"""
import json, sys, urllib.request, urllib.parse, time
BASE = sys.argv[1].rstrip("/") + "/api/v1/"
def get(path, **params):
    url = BASE + path + "?" + urllib.parse.urlencode(params)
    return json.load(urllib.request.urlopen(url))["data"]
# The run: while the mount was scraped.
start = int(sys.argv[2])
rng = get("query_range", query='up{job="strata-mount"}', start=start, end=int(time.time()), step=5)
points = [int(float(t)) for t, v in rng["result"][0]["values"] if v == "1"]
t0, t1 = points[0], points[-1]
span = f"{t1 - t0}s"
queries = {
  "fuse requests by op (count over the run)": f'sort_desc(sum by (op) (increase(strata_request_duration_seconds_count{{service="fuse"}}[{span}])))',
  "fuse requests/s, peak 30 s rate": f'max_over_time(sum(rate(strata_request_duration_seconds_count{{service="fuse"}}[30s]))[{span}:5s])',
  "fuse p99 latency (s) by op over the run": f'histogram_quantile(0.99, sum by (le, op) (increase(strata_request_duration_seconds_bucket{{service="fuse"}}[{span}])))',
  "datanode framed bytes received / sent over the run": f'sum by (op) (increase(strata_received_bytes_total{{service="framed"}}[{span}])) or sum by (op) (increase(strata_sent_bytes_total{{service="framed"}}[{span}]))',
  "datanode framed write MiB/s, peak 30 s rate": f'max_over_time((sum(rate(strata_received_bytes_total{{service="framed",op="write"}}[30s])) / 1048576)[{span}:5s])',
  "metanode grpc requests by op over the run": f'topk(8, sum by (op) (increase(strata_requests_total{{role="metanode",service="grpc"}}[{span}])))',
  "metanode p99 proposal to apply (s) over the run": f'histogram_quantile(0.99, sum by (le) (increase(strata_raft_proposal_duration_seconds_bucket{{role="metanode"}}[{span}])))',
  "metanode p99 raft log write, synced (s)": f'histogram_quantile(0.99, sum by (le) (increase(strata_raft_log_write_duration_seconds_bucket{{role="metanode",sync="true"}}[{span}])))',
  "worst apply lag (entries) during the run": f'max(max_over_time(strata_raft_apply_lag_entries[{span}]))',
  "mount cache hit ratio per level over the run": f'sum by (level) (increase(strata_cache_hits_total[{span}])) / (sum by (level) (increase(strata_cache_hits_total[{span}])) + sum by (level) (increase(strata_cache_misses_total[{span}])))',
  "errors by code during the run": f'sum by (role, service, code) (increase(strata_requests_total{{code!="ok",code!~"2.."}}[{span}])) > 0',
  "mount errors by code during the run": f'sum by (code) (increase(strata_errors_total[{span}]))',
  "peak resident memory (MiB) per role": f'max by (role) (max_over_time(process_resident_memory_bytes[{span}])) / 1048576',
  "CPU seconds per role over the run": f'sum by (role) (increase(process_cpu_seconds_total[{span}]))',
}
out = {"window": {"start": t0, "end": t1, "seconds": t1 - t0}, "results": {}}
for name, q in queries.items():
    data = get("query", query=q, time=t1)
    rows = []
    for r in data["result"]:
        rows.append({"labels": r["metric"], "value": float(r["value"][1])})
    out["results"][name] = {"query": q, "rows": rows}
json.dump(out, open(sys.argv[3], "w"), indent=1)
for name, v in out["results"].items():
    print("##", name)
    for r in v["rows"][:12]:
        lab = ",".join(f"{k}={x}" for k, x in r["labels"].items())
        print(f"   {lab or '-'}: {r['value']:.4g}")
print(out["window"])
