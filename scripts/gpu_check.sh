#!/usr/bin/env bash
# Every GPU check in one call, its figures as JSON under $OUT.
#
#   here:  python scripts/gpu_wheelhouse.py            (the wheels, this package's wheel, eng.train: .gpu_wheels/)
#   there: GIT_COMMIT=<sha> bash scripts/gpu_check.sh   (the device tool: carry [".gpu_wheels"], timeout 600)
#   here:  bash scripts/gpu_check.sh --dry-run          (builds the wheelhouse, checks its size, runs the same
#                                                        tests and a tiny version of each timing on the CPU)
#
# On the GPU machine (Python 3.12 with torch, cupy and numpy, no spaCy, no network) it installs the carried
# wheels into /tmp/site, then: (1) the GPU tests (tests/gpu: the CRF on CUDA against the CPU in float64, no
# host sync inside the recursions, crf_ner and a tiny transformer pipeline trained on the GPU, predictions
# equal to the CPU's, save/load across devices); (2) 20 training steps of configs/cpu_crf.cfg with
# --gpu-id 0; (3) the CRF alone against pytorch-crf at large shapes; (4) trf_crf against trf_ner on an
# encoder of roberta-base's size, training (mixed precision off and on) and inference. Each stage has its
# own time limit and its own output files (8 at most come back: environment.json, gpu_tests.log and .xml,
# train_cpu_config_on_gpu.log, bench_crf.log and .json, bench_train.log, bench_gpu_train.json); the timing
# scripts write their JSON after every row, so one that fails or hangs leaves the others' figures.
set -uo pipefail
cd "$(dirname "$0")/.."
DRY_RUN=0
if [ "${1:-}" = "--dry-run" ]; then DRY_RUN=1; fi
OUT="${OUT:-$(mktemp -d)}"
mkdir -p "$OUT"
WHEELS=.gpu_wheels
WORK="$(mktemp -d)"
STEPS="${GPU_CHECK_STEPS:-120}"
status=0

stage() {  # stage NAME SECONDS COMMAND...: run one stage, its output in $OUT/NAME.log
    local name=$1 limit=$2
    shift 2
    echo "== $name (limit ${limit}s)"
    local start=$SECONDS
    timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
    local rc=$?
    tail -n 15 "$OUT/$name.log"
    echo "== $name: exit $rc in $((SECONDS - start))s"
    if [ $rc -ne 0 ]; then status=1; fi
}

if [ $DRY_RUN -eq 1 ]; then
    python scripts/gpu_wheelhouse.py || exit 1  # downloads, strips, checks the 64 MiB limit
    export CONLL_CRF_TEST_DEVICE=cpu HF_HUB_OFFLINE=1
    stage gpu_tests 600 python -m pytest -q -p no:cacheprovider -m gpu tests/gpu --junitxml "$OUT/gpu_tests.xml"
    stage bench_crf 300 python scripts/bench_crf.py --shapes 16x20x9 --repeats 2 --block 2 --json "$OUT/bench_crf.json"
    stage bench_train 900 python scripts/bench_gpu_train.py "$WHEELS/eng.train" "$WORK/bench" --gpu-id -1 --steps 6 --min-seconds 0 \
        --size tiny --json "$OUT/bench_gpu_train.json"
    echo "dry run: exit $status, files in $OUT"
    exit $status
fi

python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHEELS"/*.whl \
    || exit 1
# the working tree's package first (the carried wheel brings its entry points), then the carried wheels
export PYTHONPATH="$PWD/components:/tmp/site" HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
# what ran where, and two things only this machine can tell: that pydantic imports beside the image's
# typing-extensions, and that thinc's CUDA kernels compile with the image's cupy
python3 scripts/gpu_environment.py > "$OUT/environment.json" 2>&1 || status=1
cat "$OUT/environment.json"
stage gpu_tests 80 python3 -m pytest -q -p no:cacheprovider -m gpu tests/gpu --junitxml "$OUT/gpu_tests.xml"
python3 scripts/convert.py "$WHEELS/eng.train" "$WORK/all.spacy" > /dev/null || status=1
python3 -c "import sys, spacy; from spacy.tokens import DocBin
docs = list(DocBin().from_disk(sys.argv[1] + '/all.spacy').get_docs(spacy.blank('en').vocab))
DocBin(docs=docs[:200], store_user_data=True).to_disk(sys.argv[1] + '/train.spacy')
DocBin(docs=docs[-20:], store_user_data=True).to_disk(sys.argv[1] + '/dev.spacy')" "$WORK" || status=1
stage train_cpu_config_on_gpu 40 python3 scripts/train.py configs/cpu_crf.cfg "$WORK/cpu_crf" --gpu-id 0 \
    --max-steps 20 --train "$WORK/train.spacy" --dev "$WORK/dev.spacy" --training.eval_frequency 10 \
    --paths.vectors null --components.crf_ner.model.tok2vec.tok2vec.embed.include_static_vectors false
# pytorch-crf's Viterbi traces back with one .item() (a host sync) per step: few repeats
stage bench_crf 80 python3 scripts/bench_crf.py --device cuda --shapes 256x128x9,256x128x17,64x512x9 --repeats 4 \
    --block 2 --json "$OUT/bench_crf_gpu.json"
stage bench_train 220 python3 scripts/bench_gpu_train.py "$WHEELS/eng.train" "$WORK/bench" --gpu-id 0 \
    --steps "$STEPS" --json "$OUT/bench_gpu_train.json"
echo "gpu check: exit $status, files in $OUT"
exit $status
