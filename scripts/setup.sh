#!/usr/bin/env bash
# Sets up torchconv for development, idempotently:
#   1. pip install torch==2.13.0 (the pinned build the kernels compile against;
#      on the project's machines this is a local CPU wheel);
#   2. build tools (setuptools>=64; ninja, for parallel and incremental C++ builds);
#   3. pip install --no-build-isolation -e ".[EXTRAS]" (compiles csrc/ into
#      torchconv._C when it has sources).
#
# Usage: bash scripts/setup.sh [EXTRAS]      EXTRAS: comma-separated, default "test"
#                                            (e.g. "test,examples")
# Environment:
#   PYTHON=/path/to/python   interpreter to install into (default: python3, else python);
#   TORCHCONV_VENV=DIR       create/use a virtual environment there instead (made with
#                            --system-site-packages, so an installed torch is reused);
#   TORCHCONV_SETUP_FORCE=1  reinstall even if nothing changed.
# An interpreter that refuses system-wide installs (PEP 668) gets a .venv/ here.
#
# Running it again does nothing (a second or two) unless setup.py, pyproject.toml,
# csrc/ or the extras changed, or the install went away: the state of the last
# successful run is kept in build/setup-stamp. It prints the python to use last,
# on a line of its own, for scripts/run.sh.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
EXTRAS="${1:-test}"
STAMP="$ROOT/build/setup-stamp"
export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1

log() { echo "[setup] $*" >&2; }

# ------------------------------------------------------------------ interpreter
if [[ -n "${TORCHCONV_VENV:-}" ]]; then
    VENV="$TORCHCONV_VENV"
elif [[ -n "${PYTHON:-}" ]]; then
    VENV=""
else
    PYTHON="$(command -v python3 || command -v python || true)"
    [[ -n "$PYTHON" ]] || { log "no python3 or python on PATH"; exit 1; }
    VENV=""
    if "$PYTHON" - <<'EOF'
import os, sys, sysconfig
in_venv = sys.prefix != sys.base_prefix
sys.exit(0 if not in_venv and os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")) else 1)
EOF
    then
        VENV="$ROOT/.venv"
        log "$PYTHON is externally managed (PEP 668): using a virtual environment in $VENV"
    fi
fi
if [[ -n "$VENV" ]]; then
    if [[ ! -x "$VENV/bin/python" ]]; then
        log "creating virtual environment $VENV"
        "${PYTHON:-python3}" -m venv --system-site-packages "$VENV"
    fi
    PYTHON="$VENV/bin/python"
fi
PYTHON="$(command -v "$PYTHON")"

# ------------------------------------------------------------------ up to date?
fingerprint() {
    {
        echo "python=$PYTHON"
        sha256sum setup.py pyproject.toml
        if [[ -d csrc ]]; then
            find csrc -type f \( -name '*.cpp' -o -name '*.cu' -o -name '*.h' -o -name '*.cuh' \) -print0 \
                | sort -z | xargs -0 -r sha256sum
        fi
        env | grep -E '^(TORCHCONV_BUILD_CUDA|TORCHCONV_BUILD_CPP)=' | sort || true
    } | sha256sum | cut -d' ' -f1
}

# The modules each extra provides, to notice an install that went away.
# (Not torchvision, which the test extra also installs: beside the CPU torch its
# PyPI wheel's compiled ops do not load and a plain `import torchvision` raises;
# tests/zoo_models.py imports its models without them.)
modules_of() {
    case "$1" in
        test) echo "pytest hypothesis expecttest" ;;
        examples) echo "tqdm matplotlib mlxtend" ;;
        *) echo "" ;;
    esac
}

installed_ok() {
    local modules="torch torchconv"
    local extra
    for extra in ${EXTRAS//,/ }; do modules="$modules $(modules_of "$extra")"; done
    "$PYTHON" - "$ROOT" $modules <<'EOF' 2>/dev/null
import importlib, os, sys
root, modules = sys.argv[1], sys.argv[2:]
for name in modules:
    module = importlib.import_module(name)
import torch, torchconv
assert torch.__version__.split("+")[0] == "2.13.0", torch.__version__
# The editable install must be this checkout's.
assert os.path.realpath(torchconv.__file__).startswith(os.path.realpath(root) + os.sep), torchconv.__file__
EOF
}

want="$(fingerprint)"
if [[ "${TORCHCONV_SETUP_FORCE:-0}" != 1 && -f "$STAMP" ]]; then
    have_hash="$(sed -n 's/^hash=//p' "$STAMP")"
    have_extras=",$(sed -n 's/^extras=//p' "$STAMP"),"
    covered=1
    for extra in ${EXTRAS//,/ }; do
        [[ "$have_extras" == *",$extra,"* ]] || covered=0
    done
    if [[ "$have_hash" == "$want" && $covered == 1 ]] && (cd /tmp && installed_ok); then
        log "up to date ($PYTHON, extras: $(sed -n 's/^extras=//p' "$STAMP"))"
        echo "$PYTHON"
        exit 0
    fi
fi

# ------------------------------------------------------------------ install
start=$SECONDS
run() { log "+ $*"; "$@" >&2; }
run "$PYTHON" -m pip install torch==2.13.0
run "$PYTHON" -m pip install "setuptools>=64"
if ! command -v ninja >/dev/null 2>&1 && ! "$PYTHON" -c "import ninja" >/dev/null 2>&1; then
    run "$PYTHON" -m pip install ninja
fi
# A ninja installed by pip lives in the interpreter's scripts directory.
PATH="$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$PATH"
export PATH
run "$PYTHON" -m pip install --no-build-isolation -e ".[${EXTRAS}]"
if ! (cd /tmp && installed_ok); then
    log "the installed package does not import from $ROOT"
    exit 1
fi
mkdir -p "$(dirname "$STAMP")"
printf 'hash=%s\nextras=%s\n' "$want" "$EXTRAS" > "$STAMP"
"$PYTHON" - >&2 <<'EOF'
import torch, torchconv
print(f"[setup] torch {torch.__version__}, torchconv {torchconv.__version__}, "
      f"backends on cpu: {torchconv.backends.available('cpu')}")
EOF
log "done in $((SECONDS - start)) s"
echo "$PYTHON"
