#!/usr/bin/env bash
# Fill the git-ignored folders that travel to the GPU machine with the working tree (see benchmarks/GPU.md):
#   .whl/  wheels that machine lacks (Python 3.12, x86-64 manylinux): airbench, papermill, nbval, ipykernel, ...
#   .gpu_data/  the CIFAR-10 JPEG archive alone (gpu_run.py extracts it into data/ there; data/ here, which may
#               hold an extracted copy for the tests, is not carried)
# Run from anywhere on the build machine, which needs pip and the registry:  bash benchmarks/gpu_prepare.sh
# Environment: CIFAR10_JPEG_ARCHIVE (default ../shared/data/cifar10-jpeg.tar.gz beside the repository).
set -euo pipefail
cd "$(dirname "$0")/.."
LIMIT_MIB=64  # what one call to the GPU machine may carry, working tree included
ARCHIVE=${CIFAR10_JPEG_ARCHIVE:-../shared/data/cifar10-jpeg.tar.gz}
PY=${PYTHON:-python3}

[ -f "$ARCHIVE" ] || { echo "error: no CIFAR-10 JPEG archive at $ARCHIVE; set CIFAR10_JPEG_ARCHIVE" >&2; exit 2; }
git check-ignore -q .whl/x && git check-ignore -q .gpu_data/x \
    || { echo "error: .whl/ and .gpu_data/ must be git-ignored (see .gitignore)" >&2; exit 2; }

rm -rf .whl .gpu_data && mkdir -p .whl .gpu_data
# airbench 0.1.8 is an sdist only: build its (pure-Python) wheel here.
"$PY" -m pip wheel -q --no-deps --no-build-isolation airbench==0.1.8 -w .whl
# What the notebooks and their tests need, as binary wheels for the GPU machine's Python: the pinned set of
# gpu_wheels.txt, so that a release on the registry cannot change what was checked. To upgrade, download
# "papermill nbval nbclient nbformat ipykernel jupyter_client" with their dependencies (this command without
# --no-deps and -r), check them as gpu_wheels.txt says, and write the new names==versions there.
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp --abi cp312 \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
    -d .whl -r benchmarks/gpu_wheels.txt

# Drop what the GPU image already has (as its package list says): fewer bytes to carry, and its
# own builds of torch and friends stay the ones imported. gpu_run.py check reports any import that fails.
PREINSTALLED='torch|torchvision|triton|nvidia_.*|numpy|attrs|certifi|charset_normalizer|click|coverage|idna|iniconfig|jinja2|markupsafe|packaging|pluggy|psutil|pygments|pytest|python_dateutil|pyyaml|requests|six|tqdm|typing_extensions|urllib3|aiohttp|aiosignal|aiohappyeyeballs|frozenlist|multidict|yarl|propcache|filelock|fsspec|setuptools|wheel|pip'
for wheel in .whl/*.whl; do
    name=$(basename "$wheel" | cut -d- -f1 | tr 'A-Z.-' 'a-z__')
    if [[ $name =~ ^($PREINSTALLED)$ ]]; then rm "$wheel"; fi
done

cp "$ARCHIVE" .gpu_data/cifar10-jpeg.tar.gz

whl_kib=$(du -sk .whl | cut -f1); data_kib=$(du -sk .gpu_data | cut -f1)
echo ".whl/: $(ls .whl | wc -l) wheels, $((whl_kib / 1024)) MiB; .gpu_data/: $((data_kib / 1024)) MiB"
tracked_kib=$(git ls-files -z | du -ck --files0-from=- 2>/dev/null | tail -1 | cut -f1)
total_mib=$(( (whl_kib + data_kib + tracked_kib) / 1024 ))
echo "with the tracked files: $total_mib MiB of the $LIMIT_MIB MiB a call may carry"
[ "$total_mib" -lt "$LIMIT_MIB" ] || { echo "error: $total_mib MiB is over the $LIMIT_MIB MiB limit" >&2; exit 1; }
