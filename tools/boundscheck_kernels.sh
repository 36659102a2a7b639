#!/usr/bin/env bash
# CI step: the Cython kernels built with bounds checking, run against the kernel tests.
#
#   tools/boundscheck_kernels.sh                      # tests/kernels, Cython-backend cases
#   tools/boundscheck_kernels.sh tests/kernels tests/test_fuzz_api.py -k cython
#                                                     # any pytest arguments instead
#
# The repository's files (tracked, plus untracked ones git does not ignore) are
# copied to a temporary directory; there `RNNENGINE_CYTHON_BOUNDSCHECK=1 python
# setup.py build_ext --inplace` builds the bounds-checked variant (boundscheck,
# wraparound and initializedcheck on, and every kernel entry checks each buffer's
# shape against the dims it is given: see setup.py), and pytest runs with
# RNNENGINE_KERNELS=cython and that copy first on the path. The working tree's
# own build is never touched. A probe checks that the imported kernels are the
# copy's and really are bounds-checked before any test runs.
#
# Environment: PYTHON (default python3); KEEP=1 keeps the temporary copy.
set -euo pipefail

PYTHON="${PYTHON:-python3}"
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d "${TMPDIR:-/tmp}/rnnengine-boundscheck.XXXXXX")"
if [[ "${KEEP:-0}" == "1" ]]; then
    echo "boundscheck: keeping $work"
else
    trap 'rm -rf "$work"' EXIT
fi

cd "$repo"
git ls-files -z --cached --others --exclude-standard \
    | while IFS= read -r -d '' f; do [[ -f "$f" ]] && printf '%s\0' "$f"; done \
    | tar --null -T - -cf - | tar -xf - -C "$work"

# One ISA build is enough here (and a third of the time): the one this CPU
# runs, or RNNENGINE_ISA's where that is set.
isa="${RNNENGINE_ISA:-$("$PYTHON" -c 'import rnnengine.kernels as k; print(k.ISA or "baseline")')}"
cd "$work"
echo "boundscheck: building the bounds-checked Cython kernels ($isa) in $work"
if ! RNNENGINE_BUILD_ISAS="$isa" RNNENGINE_CYTHON_BOUNDSCHECK=1 "$PYTHON" setup.py build_ext --inplace >build.log 2>&1; then
    tail -n 60 build.log
    echo "boundscheck: the build failed" >&2
    exit 1
fi

export PYTHONPATH="$work${PYTHONPATH:+:$PYTHONPATH}"
export RNNENGINE_KERNELS=cython
"$PYTHON" - "$work" <<'EOF'
import os, sys
import numpy as np
import rnnengine
from rnnengine.kernels import _cy_simple_rnn

work = os.path.realpath(sys.argv[1])
for mod in (rnnengine, _cy_simple_rnn):
    assert os.path.realpath(mod.__file__).startswith(work + os.sep), f"{mod.__name__} from {mod.__file__}"
# y_out one step too long: harmless for a release build (nothing is read or
# written out of bounds), refused by the bounds-checked one.
B, T, C, H = 1, 2, 3, 4
f32 = np.float32
from rnnengine.kernels.contract import forward_args
args = forward_args("simple_rnn", np.zeros((B, T, C), f32), (np.zeros((B, H), f32),),
                    (np.zeros((C, H), f32), np.zeros((H, H), f32), np.zeros(H, f32)), 1,
                    return_sequences=1, y_out=np.zeros((B, T + 1, H), f32))
try:
    _cy_simple_rnn.simple_rnn_forward(*args)
except ValueError as exc:
    print(f"boundscheck: probe refused a mis-shaped buffer as it should: {exc}")
else:
    sys.exit("boundscheck: the kernels accepted a mis-shaped buffer: not a bounds-checked build")
EOF

if [[ $# -eq 0 ]]; then
    set -- tests/kernels -k cython
fi
"$PYTHON" -m pytest -q -p no:cacheprovider "$@"
