#!/bin/bash
# bench validate on a GPU machine lent for a few minutes, with no network: Python 3.12 and its own torch,
# segmem run from this checkout, nnU-Net's pure-Python wheels carried in .whl (made here with
# ../shared/gpu/prepare-wheels.sh .whl). One call does it all, failing fast:
#   1. one small CUDA configuration (bench run); if it is not ok, stop there (a fixed rerun keeps the lease);
#   2. bench validate, the architectures no GPU has measured yet first (then the cheapest), starting no
#      configuration LIMIT_S seconds after it started (the install and the smoke run come before);
#   3. its CSV, Markdown, results store and fixtures packed in $OUT/results.tar.gz, recorded snapshots
#      in $OUT/snapshots.tar.gz (about 40 MB at most: a call brings back 64 MB at most).
# Exits with bench validate's status (1: the verdict failed; 130: interrupted), after packing.
#
#   [ARCHS="nnunet unet3d"] [SHARE=3] [SMOKE=0] [GRACE=110] [FRESH=1] [OUT=/tmp/segmem-out] bash scripts/device_validate.sh [LIMIT_S]
# (the variables before are the environment's; LIMIT_S is the argument, in seconds, default 390)
# (FRESH=1: the whole grid measured anew, no committed measurement kept, into reports/fresh/validation and its fixtures
# into reports/fresh/fixtures (git-ignored; packed as the results; move them under reports/validation and
# tests/fixtures/traces/validation to commit them): the test of the 10-minute target on a GPU whose run is committed
# already. SMOKE=0 FRESH=1 GRACE=50 ... 510 ends inside a 600 s call (the install first: about 11 s); a second FRESH=1
# call on the same machine goes on from the first's records, and the summary's Wall time line joins the two calls'.)
# (SHARE: configurations measured at once on the GPU, bench validate --share-gpu, default 3: lent GPU time is scarce,
# and each process's allocator figures are its own; SHARE=1 measures one at a time, every figure its own)
# (GRACE: seconds after LIMIT_S before validate is interrupted, so that packing always runs. The defaults end inside
# a 600 s call, a lent GPU's longest: on the H100 the install and smoke run took 47 s, validate then ends within
# LIMIT_S + GRACE, packing took 1 s.)
# Resumes: carry reports/validation (unpacked from an earlier results.tar.gz) and the measured
# configurations are kept, whichever code version measured them (--keep-measured: lent GPU time is the
# scarce part; every kept one that another code version measured is predicted again by this checkout for the summary).
set -u
export PYTHONUNBUFFERED=1
die() { echo "error: $*" >&2; exit 2; }  # bad input or the wrong machine: one line on stderr, before any work
case "${FRESH:-0}" in 0|1) ;; *) die "FRESH must be 0 or 1 (1: the whole grid measured anew); got '$FRESH'";; esac
case "${SMOKE:-1}" in 0|1) ;; *) die "SMOKE must be 0 or 1 (0: no smoke configuration first); got '$SMOKE'";; esac
limit=${1:-390}
# every number checked before any work: a typo must not cost lent GPU time
for pair in "LIMIT_S=$limit" "GRACE=${GRACE:-110}" "SHARE=${SHARE:-3}"; do
    case "${pair#*=}" in ''|*[!0-9]*) die "${pair%%=*} must be a whole number; got '${pair#*=}'";; esac
done
[ "${SHARE:-3}" -ge 1 ] || die "SHARE must be 1 or more; got '$SHARE'"
out=${OUT:-/tmp/segmem-out}
started=$(date +%s.%N)  # to the nanosecond: what this call wrote is newer
t0=${started%.*}  # whole seconds, for the elapsed times printed
ls .whl/*.whl >/dev/null 2>&1 || die "no wheels in .whl/: make them with ../shared/gpu/prepare-wheels.sh .whl" \
    "(on a machine with network, install segmem as its README says and run bench validate instead)"
python3 -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' \
    || die "no CUDA GPU visible to torch here: this script is for a GPU machine (bench validate --recorded needs none)"
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD
bench=(python3 -c 'import sys; from bench.cli import app; sys.argv[0] = "bench"; app()')
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c 'import torch, os; from importlib.metadata import version; print("torch", torch.__version__, torch.cuda.get_device_name(0), "cudnn",
torch.backends.cudnn.version(), "cpus", os.cpu_count(), *(f"{m} {version(m)}" for m in ("typer", "click", "pandas")))'

if [ "${SMOKE:-1}" = 1 ]; then
echo "== smoke ($(( $(date +%s) - t0 )) s)"
rm -rf /tmp/smoke
"${bench[@]}" run --arch unet --device cuda --size 32 --batch 1 --repeats 1 --out /tmp/smoke 2>&1 | tee "$out/smoke.log"
python3 - <<'EOF' || { echo "smoke failed: stopping before the grid"; exit 3; }
import sys
from bench.sweep import store
df = store.load("/tmp/smoke")
print(df.reindex(columns=["arch", "status", "error", "peak_allocated_bytes", "pred_peak_allocated_bytes"]).to_string())
sys.exit(0 if len(df) and (df["status"] == "ok").all() and (df["backend"] == "cuda").all() else 1)
EOF
fi

echo "== validate ($(( $(date +%s) - t0 )) s)"
# the architectures no GPU has measured yet first (reports/validation holds every committed run), the cheapest
# first among equals
cheapest=(unet meunet vnet unet3d nnunet nnunet_resenc cascade cascade_pre nnunet_cascade)
if [ -n "${ARCHS:-}" ]; then
    archs=($ARCHS)
else
    archs=($(python3 -c 'import sys; from pathlib import Path; from bench.results import validate as V
print(*V.least_measured_first(sys.argv[1:], Path("reports/validation")))' "${cheapest[@]}"))
    [ ${#archs[@]} -gt 0 ] || archs=("${cheapest[@]}")
fi
echo "architectures in this order: ${archs[*]}"
# where the run goes: the committed runs, kept (--keep-measured), or with FRESH=1 a folder of its own, measured anew
if [ "${FRESH:-0}" = 1 ]; then
    root=reports/fresh/validation fixtures=reports/fresh/fixtures keep=()
else
    root=reports/validation fixtures=tests/fixtures/traces/validation keep=(--keep-measured)
fi
start=$(date +%s)
touch "$out/validate.log.start"
# a hard stop too (Ctrl-C's path: the records stay), so that the packing below always runs
timeout -s INT $((limit + ${GRACE:-110})) "${bench[@]}" validate $(printf -- '--arch %s ' "${archs[@]}") --timeout 180 \
    --time-limit "$limit" ${keep[@]+"${keep[@]}"} --share-gpu "${SHARE:-3}" --out "$root" --fixtures "$fixtures" 2>&1 \
    | tee "$out/validate.log"
status=${PIPESTATUS[0]}
echo "validate: exit $status, $(( $(date +%s) - start )) s wall"
# its summary (verdict, worker time by phase, the whole grid's projected run time) into this call's output
summary=$(find "$root" -maxdepth 1 -name '*.md' ! -name '*.repredicted.md' -newer "$out/validate.log.start" \
    2>/dev/null | head -1)
[ -n "$summary" ] && cat "$summary"

echo "== pack ($(( $(date +%s) - t0 )) s)"
made=$(for d in "$root" "$fixtures"; do [ -e "$d" ] && echo "$d"; done)
if [ -n "$made" ]; then
    tar czf "$out/results.tar.gz" --exclude='*.pickle' --exclude='*.pickle.gz' $made
else
    echo "nothing to pack: bench validate wrote neither $root nor $fixtures (its log above says why)"
fi
# the snapshots recorded in this call, one per architecture first, up to 40 MB compressed (the predicted ones are made
# again anywhere with bench run --backend predict --snapshot)
python3 - "$out/snapshots.tar.gz" "$started" "$root" <<'EOF'
import sys, tarfile
from pathlib import Path
# this call's only (the committed runs' snapshots are in the checkout already)
snaps = sorted(p for p in Path(sys.argv[3]).rglob("*.cuda.pickle*") if p.stat().st_mtime >= float(sys.argv[2]))
firsts = {p.name.split("-")[0]: p for p in reversed(snaps)}
order = list(dict.fromkeys([*firsts.values(), *snaps]))
with open(sys.argv[1], "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
    for n, p in enumerate(order):
        if raw.tell() > 40e6:
            print(f"snapshots: {n} of {len(order)} packed (40 MB)")
            break
        tar.add(p)
    else:
        print(f"snapshots: all {len(order)} packed")
EOF
ls -l "$out"
echo "== done ($(( $(date +%s) - t0 )) s)"
exit "$status"
