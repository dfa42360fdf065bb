#!/usr/bin/env bash
# Builds the extension and minicpmv-cli with AddressSanitizer and UndefinedBehaviorSanitizer (GCC) into
# their own virtualenv, build/sanitize/venv, and runs tests there.
#
#   tools/sanitize.sh [pytest arguments]     default: the subset below
#
# Measured on 2 shared cores: the first build ~5 min at -j1 (it uses every core unless
# CMAKE_BUILD_PARALLEL_LEVEL says otherwise), the default subset ~75 s (bad input, the tokenizer,
# image slicing; the tiny model converted once); test_conversation, test_vision, test_chat and
# test_sampler together ~220 s. .ci/run runs the default subset after the tests.
#
# The test dependencies come from the project's .venv (a .pth file); only minicpmv and ggml-python
# (whose libraries the extension finds beside it) are installed in the sanitized one.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=build/sanitize/venv
flags="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -g"

if [ ! -x $venv/bin/python ]; then
    python3 -m venv $venv
    # Before the .pth, through which pip would find .venv's copy already installed.
    export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}
$venv/bin/pip install -q --no-deps ggml-python==0.0.45
    purelib='import sysconfig; print(sysconfig.get_paths()["purelib"])'
    .venv/bin/python -c "$purelib" >"$($venv/bin/python -c "$purelib")/project-venv.pth"
fi
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}
$venv/bin/pip install -q --no-deps -Cbuild-dir=build/sanitize/build -Ccmake.build-type=RelWithDebInfo \
    -Ccmake.define.CMAKE_CXX_FLAGS="$flags" -Ccmake.define.CMAKE_C_FLAGS="$flags" .

# Python is not instrumented, so the ASan runtime is preloaded before it, and libstdc++ with it: ASan
# finds the real __cxa_throw only in a library loaded by then (else the first C++ exception fails its
# CHECK). CPython and ggml keep allocations until exit by design: leaks are not checked. Reports go
# to build/sanitize/report.* as well, since pytest's capture loses what a dying process wrote.
export LD_PRELOAD
LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libstdc++.so)"
rm -f build/sanitize/report.*
export ASAN_OPTIONS=detect_leaks=0:log_path=$PWD/build/sanitize/report UBSAN_OPTIONS=print_stacktrace=1:log_path=$PWD/build/sanitize/report
if [ $# -eq 0 ]; then
    set -- -x -q tests/test_errors.py tests/test_tokenizer.py tests/test_image_preprocess.py
fi
start=$(date +%s)
status=0
$venv/bin/python -m pytest -p no:cacheprovider "$@" || status=$?
echo "sanitized tests: $(($(date +%s) - start)) s"
if compgen -G "build/sanitize/report.*" >/dev/null; then
    head -n 40 build/sanitize/report.*
    status=1
fi
exit $status
