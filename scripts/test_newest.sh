#!/usr/bin/env bash
# Run the test suite against the newest releases of every dependency, in a throwaway venv.
#
#   bash scripts/test_newest.sh                       # report only
#   bash scripts/test_newest.sh --write-constraints   # and, when the suite passes, refresh constraints.txt
#
# Everything but torch is the newest release pip finds (no constraints.txt). torch stays at $TORCH
# (default torch==2.13.0, the CPU build on the project's CI machines): the newest torch on PyPI is a
# CUDA build of several GB. TORCH=torch takes the newest one too. Extra pytest arguments: $PYTEST_ARGS.
set -euo pipefail
cd "$(dirname "$0")/.."
write_constraints=false
[[ "${1:-}" == "--write-constraints" ]] && write_constraints=true

venv="$(mktemp -d "${TMPDIR:-/tmp}/ja-pretraining-newest.XXXXXX")"
trap 'rm -rf "$venv"' EXIT
python3 -m venv "$venv"
py="$venv/bin/python"
"$py" -m pip install --quiet --upgrade pip
"$py" -m pip install --quiet "${TORCH:-torch==2.13.0}"
# hold that torch through the eager upgrade below; nothing else is constrained
"$py" -m pip freeze | grep -i '^torch==' > "$venv/hold-torch.txt"
export PIP_CONSTRAINT="$venv/hold-torch.txt"
"$py" -m pip install --quiet --upgrade --upgrade-strategy eager -e ".[test]"

echo "== newest releases =="
"$py" -m pip freeze --exclude-editable | grep -iE '^(torch|transformers|datasets|tokenizers|accelerate|huggingface.hub|safetensors|fugashi|unidic.lite|tensorboard|numpy|pyarrow|pytest)==' || true
started=$(date +%s)
# ${PYTEST_ARGS} unquoted on purpose: several arguments
# shellcheck disable=SC2086
"$py" -m pytest -p no:cacheprovider ${PYTEST_ARGS:-}
echo "== suite passed on the newest releases in $(( $(date +%s) - started )) s =="

if $write_constraints; then
    {
        echo "# The tested set: exact versions of everything the project and its tests install."
        echo "# Made by scripts/test_newest.sh --write-constraints on $(date -u +%Y-%m-%d) from a fresh venv"
        echo "# (Python $("$py" -c 'import sys; print(sys.version.split()[0])')) that then passed the whole suite."
        echo "# Install with: pip install -e \".[test]\" -c constraints.txt"
        # a local version label (+cpu) pins one build; the release number admits the build each machine has
        "$py" -m pip freeze --exclude-editable | sed -E 's/^(torch==[^+]+)\+.*/\1/'
    } > constraints.txt
    echo "constraints.txt rewritten: review the diff and commit it"
fi
