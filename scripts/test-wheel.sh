#!/usr/bin/env bash
# The wheel as a user gets it (make test-wheel): installed into a fresh venv
# in a temporary directory outside the tree, with HANDOFF_LIBRARY,
# LD_LIBRARY_PATH and PYTHONPATH unset. The package must load the library it
# carries, handoff-supervisor must run from the venv's bin/, and a copy of
# the binding's tests runs from there (the header and the vectors are read
# from the tree; the tests that run the tree's example services stay with
# make test-python).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python3}

wheels=("$repo"/target/wheels/libhandoff-*.whl)
if [ "${#wheels[@]}" -ne 1 ] || [ ! -f "${wheels[0]}" ]; then
    echo "test-wheel: expected exactly one wheel in target/wheels (make wheel), found: ${wheels[*]}" >&2
    exit 1
fi
wheel=${wheels[0]}
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$repo/Cargo.toml" | head -1)
pytest_pin=$(grep '^pytest==' "$repo/bindings/python/requirements-dev.txt")

work=$(mktemp -d /tmp/ho-wheel-XXXXXX)
trap 'rm -rf "$work"' EXIT
unset HANDOFF_LIBRARY LD_LIBRARY_PATH PYTHONPATH
cd "$work"

# Without a pip of its own (seeding one takes longer than the install):
# this pip installs into it, as the venv's own would.
"$python" -m venv --without-pip venv
"$python" -m pip --python venv/bin/python install -q --disable-pip-version-check "$wheel" "$pytest_pin"

# The library comes from inside the installed package.
loaded=$(venv/bin/python -c 'import libhandoff; print(libhandoff.library_path())')
case "$loaded" in
    "$work"/venv/*/site-packages/libhandoff/libhandoff.so) echo "test-wheel: loads $loaded" ;;
    *) echo "test-wheel: the installed package loaded $loaded, not its own copy" >&2; exit 1 ;;
esac

# The supervisor is the venv's, and runs.
supervisor=$(PATH="$work/venv/bin:/usr/bin:/bin" command -v handoff-supervisor)
[ "$supervisor" = "$work/venv/bin/handoff-supervisor" ] || {
    echo "test-wheel: handoff-supervisor found at '$supervisor', not in the venv" >&2; exit 1; }
said=$("$supervisor" --version)
[ "$said" = "handoff-supervisor $version" ] || {
    echo "test-wheel: handoff-supervisor --version said '$said', not 'handoff-supervisor $version'" >&2; exit 1; }
echo "test-wheel: $said from $supervisor"

cp -r "$repo/bindings/python/tests" tests
HANDOFF_SOURCE_TREE=$repo venv/bin/python -m pytest -q -p no:cacheprovider tests \
    --ignore=tests/test_handoff.py --ignore=tests/test_kv_example.py --ignore=tests/test_kv_moves.py
