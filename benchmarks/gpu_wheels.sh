#!/usr/bin/env bash
# Download, here, the wheels that the GPU machine's image lacks for benchmarks/gpu_check.py, at the
# versions constraints.txt pins, into an ignored folder that the device call carries.
#
# Usage: bash benchmarks/gpu_wheels.sh [DEST]          (DEST: default .whl, in the repo root)
#
# The image (see the README's "GPU check") has Python 3.12, torch 2.11 + CUDA 13, transformers
# 5.17, accelerate 1.15, huggingface_hub 1.33, tokenizers 0.23, safetensors 0.8, numpy, pandas,
# pyarrow, psutil, PyYAML, jinja2, matplotlib, but no TRL, datasets or pydantic, and it reaches no
# package registry. So this carries:
#   - what it lacks: trl, datasets (+ dill, multiprocess), pydantic (+ pydantic_core,
#     annotated-types, typing-inspection, and the typing_extensions pydantic needs);
#   - what it has in a version below our range: transformers (5.17 < 5.23) and peft (0.21 is
#     pinned), so the engine runs with the versions CI tests;
#   - bitsandbytes (qlora_step), slimmed to its CPU and CUDA 13 libraries: the image's torch is
#     +cu130, and the wheel's builds for CUDA 11/12, ROCm and XPU (80% of its 41 MiB) would not
#     load there anyway.
# huggingface_hub is not carried: the image's 1.33 is within what transformers and datasets ask
# (>= 1.31), and our pinned 2.x would need httpx2, which the image lacks.
#
# Environment: GPU_WHEELS_PYTHON (default 3.12, the device's Python; 3.11 fetches the same set for
# a test here), GPU_WHEELS_LIMIT_MIB (default 40: the carry and the working tree share 64 MiB).
set -euo pipefail
cd "$(dirname "$0")/.."
dest=${1:-.whl}
python_version=${GPU_WHEELS_PYTHON:-3.12}
limit_mib=${GPU_WHEELS_LIMIT_MIB:-40}
python=${PYTHON:-python3}
packages=(
  trl datasets dill multiprocess
  pydantic pydantic_core annotated-types typing-inspection typing_extensions
  transformers peft
  bitsandbytes
)

pinned() {  # the version constraints.txt pins for $1 (names compared as pip normalises them)
  local want
  want=$(echo "$1" | tr 'A-Z_.' 'a-z--')
  while IFS='=' read -r name _ version; do
    if [[ $(echo "$name" | tr 'A-Z_.' 'a-z--') == "$want" ]]; then
      echo "$version"
      return
    fi
  done < <(grep -E '^[A-Za-z0-9_.-]+==' constraints.txt)
  echo "gpu_wheels.sh: $1 is not pinned in constraints.txt" >&2
  exit 1
}

rm -rf "$dest"
mkdir -p "$dest"
specs=()
for package in "${packages[@]}"; do
  specs+=("$package==$(pinned "$package")")
done
platforms=()
for tag in manylinux_2_28 manylinux_2_27 manylinux_2_24 manylinux_2_17 manylinux2014 manylinux1; do
  platforms+=(--platform "${tag}_x86_64")
done
# --no-deps: every dependency the image lacks is named above (checked by the install test in the
# README); one version of each package, since two would stop the install there.
"$python" -m pip download --quiet --no-deps --only-binary=:all: --python-version "$python_version" \
  --implementation cp "${platforms[@]}" -d "$dest" "${specs[@]}"

# Slim bitsandbytes: keep the Python code, the CPU library and the CUDA 13 builds.
"$python" - "$dest" <<'EOF'
import re
import sys
import zipfile
from pathlib import Path

for wheel in Path(sys.argv[1]).glob("bitsandbytes-*.whl"):
    drop = re.compile(r"bitsandbytes/libbitsandbytes_(cuda1[0-2]\d|rocm\d+|xpu\d+)\.so$")
    slim = wheel.with_suffix(".slim")
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(slim, "w", zipfile.ZIP_DEFLATED) as out:
        for item in src.infolist():
            if drop.search(item.filename):
                continue
            data = src.read(item)
            if item.filename.endswith(".dist-info/RECORD"):
                lines = data.decode().splitlines(keepends=True)
                data = "".join(line for line in lines if not drop.search(line.split(",")[0]))
                data = data.encode()
            out.writestr(item, data)
    slim.replace(wheel)
EOF

total=0
echo "wheels in $dest (Python $python_version, manylinux x86_64):"
for wheel in "$dest"/*.whl; do
  size=$(stat -c %s "$wheel")
  total=$((total + size))
  awk -v n="$(basename "$wheel")" -v s="$size" 'BEGIN { printf "  %-80s %6.2f MiB\n", n, s / 1048576 }'
done
awk -v s="$total" 'BEGIN { printf "  %-80s %6.2f MiB\n", "total", s / 1048576 }'
if ((total > limit_mib * 1048576)); then
  echo "gpu_wheels.sh: the wheels exceed $limit_mib MiB (GPU_WHEELS_LIMIT_MIB)" >&2
  exit 1
fi
