#!/usr/bin/env bash
# Karpenter's scheduler and ours side by side on this machine and the same inputs; prints one
# table. Not part of CI (it takes tens of minutes); see the README's benchmark section.
#
#   controller/benches/compare.sh [--samples N] [--workloads a,b,...] [--no-own] [--table]
#
#   --samples N     processes per engine, thread count and workload (default 3; the median is shown)
#   --workloads     a subset of: classes-1000 classes-5000 classes-10000 classes-20000
#                   preferences-4000 inflate-10 inflate-1000 mixed-2000 (default: all)
#   --no-own        skip Karpenter's own benchmark binary (BenchmarkScheduling*, RespectPreferences)
#   --own-only      run only that binary, replacing its earlier samples in the output folder
#   --ours-only     run only our engine on the workloads, replacing its earlier samples
#   --k1-samples N  processes with GOMAXPROCS=1 (default: --samples), to save time
#   --append        keep the samples already in the output folder (resume a run)
#   --table         only print the table from the samples already in the output folder
#
# What it runs, each solve in a fresh process:
#   - ours: `cargo bench -p karpenter --no-default-features --bench workload` (single-threaded)
#     on each workload file, which the same binary dumps;
#   - Karpenter v1.14.1 through our Go harness (tests/controlplane/karpenter-bench/harness) on
#     the same files, with GOMAXPROCS=1 and GOMAXPROCS=<all cores>;
#   - Karpenter's own benchmark binary as it ships (`go test -c -tags=test_performance`),
#     BenchmarkScheduling1000/5000/10000/20000 and BenchmarkRespectPreferences, one per process
#     with -test.benchtime=1x, with both thread counts (its inputs are its own generator's, so
#     they are shown apart).
# The first result of each engine and thread count on each workload is checked by our
# independent checker (`workload check`); a violation fails the run.
# Output folder: ${COMPARE_DIR:-$CARGO_TARGET_DIR/compare} (samples.tsv, workloads/, results/).
set -euo pipefail
shopt -s inherit_errexit
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
OUT=${COMPARE_DIR:-$CARGO_TARGET_DIR/compare}
SAMPLES=3
WORKLOADS="classes-1000 classes-5000 classes-10000 classes-20000 preferences-4000 inflate-10 inflate-1000 mixed-2000"
OWN=1
OWN_ONLY=0
OURS_ONLY=0
TABLE_ONLY=0
APPEND=0
K1_SAMPLES=
while [ $# -gt 0 ]; do
  case "$1" in
    --samples) SAMPLES=$2; shift 2 ;;
    --workloads) WORKLOADS=${2//,/ }; shift 2 ;;
    --no-own) OWN=0; shift ;;
    --own-only) OWN_ONLY=1; WORKLOADS=""; shift ;;
    --ours-only) OURS_ONLY=1; OWN=0; APPEND=1; shift ;;
    --table) TABLE_ONLY=1; shift ;;
    --k1-samples) K1_SAMPLES=$2; shift 2 ;;
    --append) APPEND=1; shift ;;
    *) echo "usage: $0 [--samples N] [--workloads a,b] [--no-own | --own-only] [--table]" >&2; exit 2 ;;
  esac
done
CORES=$(nproc)
K1_SAMPLES=${K1_SAMPLES:-$SAMPLES}
mkdir -p "$OUT/workloads" "$OUT/results"
TSV="$OUT/samples.tsv"

table() {
  python3 - "$TSV" "$OUT" "$CORES" <<'PY'
import collections, json, os, platform, statistics, subprocess, sys
tsv, out, cores = sys.argv[1], sys.argv[2], int(sys.argv[3])
rows = collections.defaultdict(list)   # (kind, workload, engine, threads) -> [(pps, nodes, price)]
prep = collections.defaultdict(list)   # workload -> our Scheduler::new seconds
if os.path.exists(tsv):
    for line in open(tsv):
        parts = line.rstrip("\n").split("\t")
        kind, wl, eng, thr, pps, nodes, price = parts[:7]
        rows[(kind, wl, eng, int(thr))].append((float(pps), int(float(nodes)), float(price)))
        if eng == "ours" and len(parts) > 7 and parts[7]:
            prep[wl].append(float(parts[7]))
def med(key):
    s = rows.get(key)
    if not s: return None
    return statistics.median(x[0] for x in s), s[0][1], s[0][2], len(s)
def prep_ms(wl):
    return f"{statistics.median(prep[wl]) * 1000:.2f}" if prep.get(wl) else "-"
checks = {}
cpath = os.path.join(out, "checks.tsv")
if os.path.exists(cpath):
    for line in open(cpath):
        wl, eng, thr, n = line.rstrip("\n").split("\t")
        checks[(wl, eng)] = max(checks.get((wl, eng), 0), int(n or 0))
def fmtr(v):
    return "-" if v is None else (f"{v:,.1f}" if v >= 10 else f"{v:.2f}" if v >= 0.1 else f"{v:.3f}")
def fmt(v, nd=0):
    return "-" if v is None else f"{v:,.{nd}f}"
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
go = subprocess.run(["go", "version"], capture_output=True, text=True).stdout.strip()
rustc = subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip()
print(f"machine: {cpu}, {cores} cores, {platform.system()} {platform.release()}; {go}; "
      f"Karpenter sigs.k8s.io/karpenter v1.14.1; ours {rustc}, release, single-threaded")
print("pods/s: median of N processes (N in brackets), solve only; ours new ms: our Scheduler::new (median), "
      "which, like Karpenter's NewScheduler, is not timed; nodes and $/h of the first; "
      "K1 = Karpenter GOMAXPROCS=1, K%d = GOMAXPROCS=%d" % (cores, cores))
hdr = ("workload", "ours pods/s", "ours new ms", "K1 pods/s", f"K{cores} pods/s", "ours/K1", f"ours/K{cores}",
       "ours nodes", "K nodes", "ours $/h", "K $/h", "$ ours/K", "check ours/K")
lines = []
wls = []
for (kind, wl, _, _) in rows:
    if kind == "workload" and wl not in wls: wls.append(wl)
order = ["classes-1000", "classes-5000", "classes-10000", "classes-20000", "preferences-4000",
         "inflate-10", "inflate-1000", "mixed-2000"]
wls.sort(key=lambda w: order.index(w) if w in order else 99)
for wl in wls:
    o = med(("workload", wl, "ours", 1))
    k1 = med(("workload", wl, "karpenter", 1))
    kn = med(("workload", wl, "karpenter", cores))
    kk = kn or k1
    r = lambda a, b: None if a is None or b is None else a[0] / b[0]
    lines.append((wl,
        f"{fmt(o and o[0])} [{o[3] if o else 0}]", prep_ms(wl), f"{fmt(k1 and k1[0])} [{k1[3] if k1 else 0}]",
        f"{fmt(kn and kn[0])} [{kn[3] if kn else 0}]", fmtr(r(o, k1)), fmtr(r(o, kn)),
        fmt(o and o[1]), fmt(kk and kk[1]), fmt(o and o[2], 2), fmt(kk and kk[2], 2),
        "-" if not (o and kk and kk[2]) else f"{o[2] / kk[2]:.3f}",
        "/".join("-" if (wl, e) not in checks else ("ok" if checks[(wl, e)] == 0 else f"{checks[(wl, e)]} viol.")
                 for e in ("ours", "karpenter"))))
w = [max(len(h), *(len(l[i]) for l in lines)) if lines else len(h) for i, h in enumerate(hdr)]
print("  ".join(h.ljust(w[i]) if i == 0 else h.rjust(w[i]) for i, h in enumerate(hdr)))
for l in lines:
    print("  ".join(c.ljust(w[i]) if i == 0 else c.rjust(w[i]) for i, c in enumerate(l)))
own = [k for k in rows if k[0] == "own"]
if own:
    print("\nKarpenter's own benchmark binary (its own inputs; pods/s as it reports them):")
    names = []
    for k in own:
        if k[1] not in names: names.append(k[1])
    print(f"{'benchmark':<28} {'GOMAXPROCS=1':>16} {f'GOMAXPROCS={cores}':>16} {'nodes':>7}")
    for n in names:
        a, b = med(("own", n, "karpenter", 1)), med(("own", n, "karpenter", cores))
        print(f"{n:<28} {fmt(a and a[0]) + ' [' + str(a[3] if a else 0) + ']':>16} "
              f"{fmt(b and b[0]) + ' [' + str(b[3] if b else 0) + ']':>16} {fmt((a or b) and (a or b)[1]):>7}")
PY
}

if [ "$TABLE_ONLY" = 1 ]; then table; exit 0; fi

echo "==> building Karpenter's benchmark and our harness (Go)" >&2
GOBIN_DIR=$("$ROOT/tests/controlplane/karpenter-bench/build.sh" | tail -n1)
echo "==> building our workload bench (cargo, release)" >&2
OURS=$(cd "$ROOT" && cargo bench -p karpenter --no-default-features --bench workload --no-run -j"${CARGO_JOBS:-2}" \
  --message-format=json 2>/dev/null | jq -r 'select(.executable != null and .target.name == "workload") | .executable' | tail -n1)
[ -x "$OURS" ] || { echo "error: the workload bench did not build" >&2; exit 1; }
"$OURS" dump "$OUT/workloads" >/dev/null
if [ "$OWN_ONLY" = 1 ]; then
  if [ -f "$TSV" ]; then grep -v '^own' "$TSV" > "$TSV.tmp" || true; mv "$TSV.tmp" "$TSV"; fi
elif [ "$OURS_ONLY" = 1 ]; then
  if [ -f "$TSV" ]; then grep -v -P '^workload\t[^\t]+\tours\t' "$TSV" > "$TSV.tmp" || true; mv "$TSV.tmp" "$TSV"; fi
  c="$OUT/checks.tsv"
  if [ -f "$c" ]; then grep -v -P '^[^\t]+\tours\t' "$c" > "$c.tmp" || true; mv "$c.tmp" "$c"; fi
elif [ "$APPEND" = 0 ]; then
  : > "$TSV"
fi

record() { # kind workload engine threads json-line
  printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" \
    "$(printf '%s' "$5" | jq -r '[.podsPerSecond, .nodeCount, .pricePerHour, (.prepareSeconds // "")] | @tsv')" >> "$TSV"
}

checked() { # workload engine threads file result: the checker's verdict into checks.tsv
  local n
  if "$OURS" check "$4" "$5" > "$5.check" 2>&1; then n=0; else
    n=$(grep -c '^  ' "$5.check" || true); echo "    $2 ($3 threads) on $1: violations, see $5.check" >&2
    n=$(head -n1 "$5.check" | sed -E 's/.*: ([0-9]+) violation.*/\1/')
  fi
  printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$n" >> "$OUT/checks.tsv"
}
[ "$OWN_ONLY" = 1 ] || [ "$APPEND" = 1 ] || : > "$OUT/checks.tsv"

for wl in $WORKLOADS; do
  file="$OUT/workloads/$wl.json"
  [ -f "$file" ] || { echo "error: no workload $wl" >&2; exit 2; }
  for i in $(seq 1 "$SAMPLES"); do
    res="$OUT/results/$wl.ours.json"
    line=$("$OURS" run "$file" --out "$res")
    record workload "$wl" ours 1 "$line"
    [ "$i" = 1 ] && checked "$wl" ours 1 "$file" "$res"
    for threads in 1 "$CORES"; do
      if [ "$OURS_ONLY" = 1 ]; then continue; fi
      if [ "$threads" = 1 ] && [ "$i" -gt "$K1_SAMPLES" ]; then continue; fi
      res="$OUT/results/$wl.karpenter-$threads.json"
      GOMAXPROCS=$threads "$GOBIN_DIR/karpenter-harness" "$file" > "$res"
      record workload "$wl" karpenter "$threads" "$(jq -c 'del(.nodes)' "$res")"
      [ "$i" = 1 ] && checked "$wl" karpenter "$threads" "$file" "$res"
    done
    echo "    $wl: sample $i done" >&2
  done
done

if [ "$OWN" = 1 ]; then
  for b in BenchmarkScheduling1000 BenchmarkScheduling5000 BenchmarkScheduling10000 BenchmarkScheduling20000 BenchmarkRespectPreferences; do
    for i in $(seq 1 "$SAMPLES"); do
      for threads in 1 "$CORES"; do
        if [ "$threads" = 1 ] && [ "$i" -gt "$K1_SAMPLES" ]; then continue; fi
        line=$(cd "$OUT" && GOMAXPROCS=$threads "$GOBIN_DIR/scheduling.test" -test.run='^$' \
          -test.bench="^$b\$" -test.benchtime=1x | grep "^$b")
        pps=$(printf '%s' "$line" | awk '{for (i = 1; i < NF; i++) if ($(i+1) == "pods/sec") print $i}')
        nodes=$(printf '%s' "$line" | awk '{for (i = 1; i < NF; i++) if ($(i+1) == "nodes") print $i}')
        printf 'own\t%s\tkarpenter\t%s\t%s\t%s\t0\n' "$b" "$threads" "$pps" "$nodes" >> "$TSV"
      done
      echo "    $b: sample $i done" >&2
    done
  done
fi
table
