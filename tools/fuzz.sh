#!/usr/bin/env bash
# Builds one libFuzzer target of fuzz/ (clang, ASan + UBSan, in build/fuzz) and runs it for SECONDS,
# then prints the executions and any crash files.
#
#   tools/fuzz.sh TARGET SECONDS     TARGET: fuzz_model_load, fuzz_image, fuzz_tokenizer, fuzz_chat_prompt
#
# Needs clang 16 or later with libFuzzer (Debian: clang-19 libclang-rt-19-dev; clang 14 does not know the
# "f16c" of kernels/cpu_features.cpp) and the project's .venv (ggml-python, gguf). CC/CXX choose another.
# The corpus grows in build/fuzz/corpus/TARGET across runs; crashes land in build/fuzz/crashes/TARGET/.
# Reproduce one: build/fuzz/TARGET CRASH_FILE. Extra arguments go to libFuzzer (e.g. -jobs=N).
set -euo pipefail
cd "$(dirname "$0")/.."
target=${1:?usage: tools/fuzz.sh TARGET SECONDS [libFuzzer flags]}
seconds=${2:?usage: tools/fuzz.sh TARGET SECONDS [libFuzzer flags]}
shift 2
build=build/fuzz
python=${PYTHON:-$PWD/.venv/bin/python}

if [ ! -f $build/Makefile ]; then
    newest=$(compgen -c clang++- | grep -E '^clang\+\+-[0-9]+$' | sort -t- -k2 -n | tail -1)
    CC=${CC:-clang${newest#clang++}} CXX=${CXX:-${newest:-clang++}} cmake -S . -B $build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMINICPMV_FUZZ=ON \
        -DMINICPMV_BUILD_C_API=OFF -DMINICPMV_BUILD_CLI=OFF -DPython_EXECUTABLE="$python" >/dev/null
fi
cmake --build $build --target "$target" -j "${CMAKE_BUILD_PARALLEL_LEVEL:-1}"
[ -f $build/gguf.dict ] || "$python" fuzz/make_corpus.py $build

mkdir -p $build/corpus/"$target" $build/crashes/"$target"
log=$build/"$target".log
dict=()
[ "$target" != fuzz_model_load ] || dict=(-dict=$build/gguf.dict)
# ggml's own leaks at exit are not ours to fix; the input files are a few hundred kB at most.
ASAN_OPTIONS=detect_leaks=0 UBSAN_OPTIONS=print_stacktrace=1 \
    $build/"$target" -max_total_time="$seconds" -print_final_stats=1 -max_len=400000 -timeout=20 \
    -artifact_prefix=$build/crashes/"$target"/ "${dict[@]}" "$@" $build/corpus/"$target" $build/seeds/"$target" 2>&1 | tee "$log" |
    grep -E "^#[0-9]+[[:space:]]+(INITED|DONE)|ERROR|SUMMARY|Test unit written" || true
runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
echo "$target: ${runs:-?} executions in $seconds s; log $log"
crashes=$(find $build/crashes/"$target" -type f | sort)
if [ -n "$crashes" ]; then
    echo "crash files:"
    echo "$crashes"
    exit 1
fi
