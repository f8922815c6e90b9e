#!/usr/bin/env bash
# The project's commands; each sets up what it needs first (scripts/setup.sh,
# which does nothing when already done).
#
#   bash scripts/run.sh demo [ARGS]      the demo: trains the MNIST example offline,
#                                        python examples/mnist_train.py [ARGS] (~1.5-3 min)
#   bash scripts/run.sh validate [ARGS]  python -m torchconv.validate [ARGS]
#   bash scripts/run.sh test [ARGS]      the test suite: python -m pytest -q [ARGS]
#                                        (options from pyproject.toml; what CI runs)
#   bash scripts/run.sh setup [EXTRAS]   only the setup (default extras: test)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

usage() { sed -n '2,10p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

command="${1:-}"
[[ $# -gt 0 ]] && shift
case "$command" in
    demo)
        PY="$(bash scripts/setup.sh test,examples | tail -n 1)"
        exec "$PY" examples/mnist_train.py "$@"
        ;;
    validate)
        PY="$(bash scripts/setup.sh test,examples | tail -n 1)"
        exec "$PY" -m torchconv.validate "$@"
        ;;
    test)
        PY="$(bash scripts/setup.sh test | tail -n 1)"
        start=$SECONDS
        status=0
        "$PY" -m pytest -q "$@" || status=$?
        echo "[test] pytest exited with $status after $((SECONDS - start)) s" >&2
        exit $status
        ;;
    setup)
        bash scripts/setup.sh "${1:-test}" >/dev/null
        ;;
    -h | --help | help)
        usage
        ;;
    *)
        usage >&2
        exit 2
        ;;
esac
