#!/usr/bin/env bash
# The edge agent's smoke path on aarch64, under user-mode emulation (docs/edge.md, "ARM").
#
#   sudo deploy/edge/arm-smoke.sh [WORK_DIR]        # from a checkout, with `make install` done
#
# On a Debian/Ubuntu x86_64 host (root: apt): installs qemu-user-static, adds the arm64 architecture,
# downloads Debian's arm64 CPython 3.11 and the libraries it loads and unpacks them into a sysroot
# (nothing arm64 is installed on the host). Then, for each TFLite runtime (ai-edge-litert; tflite-runtime
# through the `tflite` extra), pip fetches the aarch64 wheels of the edge distribution's pins
# into a target folder; the emulated Python installs the tiny signed forecaster, runs
# `streamedge edge run --source file` on a small CSV with the broker away (exit 3: the results stay
# buffered) and `edge status`; the host counts the buffered results. Last line: one verdict per runtime.
# A crash is re-run with the runtime's interpreter alone, then with the agent again while the sysroot
# holds the /proc/cpuinfo of an aarch64 board (qemu-user 7.2 shows the guest the x86 host's, which a
# runtime's CPU detection may not survive; qemu reads a path in the -L sysroot first), to tell the
# emulator's part from the runtime's.
set -u -o pipefail

REPO="$(cd "$(dirname "$0")/../.." && pwd)"
PY="${PYTHON:-$REPO/.venv/bin/python}"
WORK="${1:-$(mktemp -d)}"
mkdir -p "$WORK"
WORK="$(cd "$WORK" && pwd)"
SYSROOT="$WORK/sysroot"
log() { printf '%s\n' "arm-smoke: $*" >&2; }

# Debian's CPython 3.11 for arm64 and what it links against (bookworm names).
DEBS="libc6 libgcc-s1 libstdc++6 python3.11-minimal libpython3.11-minimal libpython3.11-stdlib media-types
libexpat1 zlib1g libbz2-1.0 libcrypt1 libdb5.3 libffi8 liblzma5 libncursesw6 libnsl2 libreadline8
libsqlite3-0 libtinfo6 libtirpc3 libuuid1 libssl3 libgssapi-krb5-2 libkrb5-3 libk5crypto3 libcom-err2
libkrb5support0 libkeyutils1 libmpdec3 libzstd1"

setup_emulator() {
    command -v qemu-aarch64-static >/dev/null || { apt-get update -qq && apt-get install -y -qq qemu-user-static; }
    dpkg --print-foreign-architectures | grep -qx arm64 || { dpkg --add-architecture arm64 && apt-get update -qq; }
    if [ ! -x "$SYSROOT/usr/bin/python3.11" ]; then
        mkdir -p "$WORK/debs" "$SYSROOT/proc"
        (cd "$WORK/debs" && for deb in $DEBS; do  # (apt's "unsandboxed as root" notice is expected)
            case "$deb" in media-types) apt-get download -qq "$deb" ;; *) apt-get download -qq "$deb:arm64" ;; esac
        done) || return 1
        for file in "$WORK"/debs/*.deb; do dpkg -x "$file" "$SYSROOT"; done
    fi
    qemu-aarch64-static --version | head -1 >&2
}

# A signed tiny forecaster, its key and a CSV of 200 readings of two streams, made on the host.
make_inputs() {
    [ -s "$WORK/model-path" ] && [ -s "$WORK/readings.csv" ] && return 0
    "$PY" - "$WORK" <<'EOF'
import math, sys
from pathlib import Path
from streamedge.training.tiny import build_tiny_models
work = Path(sys.argv[1])
tiny = build_tiny_models(work / "tiny")
(work / "model-path").write_text(f"{tiny.forecaster}\n{tiny.public_key}\n")
lines = ["ts,device_id,stream,seq,value"]
for i in range(100):
    for stream in ("a", "b"):
        lines.append(f"{1.7e9 + i:.1f},arm-1,{stream},{i},{10 + 3 * math.sin(i / 5):.4f}")
(work / "readings.csv").write_text("\n".join(lines) + "\n")
EOF
}

# The aarch64 wheels of the edge pins (plus `extra`), installed for the target into $1.
fetch_wheels() {
    local target="$1" extra="$2" glibc="$3" platforms=() m
    for m in $(seq "$glibc" -1 17); do platforms+=(--platform "manylinux_2_${m}_aarch64"); done
    platforms+=(--platform manylinux2014_aarch64)
    rm -rf "$target" "$WORK/dist" && mkdir -p "$WORK/dist"
    "$PY" -m pip wheel --quiet --no-deps -w "$WORK/dist" "$REPO/core" "$REPO/edge" || return 1
    "$PY" -m pip install --quiet --disable-pip-version-check --target "$target" --only-binary=:all: \
        "${platforms[@]}" --python-version 3.11 --implementation cp --abi cp311 --abi abi3 --abi none \
        --find-links "$WORK/dist" "streamedge-edge${extra}"
}

# The emulated python with the target on its path.
emulated() {
    env PYTHONPATH="$TARGET" PYTHONNOUSERSITE=1 STREAMEDGE_HOME="$RUNDIR/home" \
        qemu-aarch64-static -L "$SYSROOT" "$SYSROOT/usr/bin/python3.11" "$@"
}

# The smoke path with runtime $1; prints "ok N results" or the failure.
smoke() {
    local runtime="$1"
    local model key rc
    model="$(sed -n 1p "$WORK/model-path")"; key="$(sed -n 2p "$WORK/model-path")"
    rm -rf "$RUNDIR" && mkdir -p "$RUNDIR"
    local common=(--model-dir "$RUNDIR/models" --public-key "$key" --buffer-path "$RUNDIR/buffer.sqlite")
    emulated -m streamedge.cli.main edge install "$model" "${common[@]}" >"$RUNDIR/install.log" 2>&1 \
        || { echo "install failed: $(tail -3 "$RUNDIR/install.log" | tr '\n' ' ')"; return 1; }
    emulated -m streamedge.cli.main edge run "${common[@]}" --device-id arm-1 --runtime "$runtime" \
        --source file --source-path "$WORK/readings.csv" --metrics-port 0 --model-updates false \
        --bootstrap-servers 127.0.0.1:9 --kafka-timeout-s 1 --drain-timeout-s 2 --log-format text \
        >"$RUNDIR/run.log" 2>&1
    rc=$?
    if [ "$rc" -ne 3 ]; then  # 3: the source ended, the broker (away) did not take the buffer
        echo "edge run exited $rc: $(grep -v '^ ' "$RUNDIR/run.log" | tail -3 | tr '\n' ' ')"; return 1
    fi
    emulated -m streamedge.cli.main edge status "${common[@]}" >"$RUNDIR/status.json" 2>&1 \
        || { echo "status failed: $(tail -3 "$RUNDIR/status.json" | tr '\n' ' ')"; return 1; }
    "$PY" - "$RUNDIR/buffer.sqlite" "$runtime" <<'EOF'
import json, sqlite3, sys
rows = sqlite3.connect(sys.argv[1]).execute("SELECT value FROM outbox WHERE topic LIKE '%edge-results'").fetchall()
runtimes = {json.loads(v).get("runtime") for (v,) in rows} - {None}
assert rows, "no results buffered"
print(f"ok {len(rows)} results" + (f" (runtime field: {sorted(runtimes)})" if runtimes else ""))
EOF
}

# The runtime's interpreter alone on the model, no agent: does the crash follow the runtime?
bare_interpreter() {
    local module="$1"
    emulated - "$(sed -n 1p "$WORK/model-path")" "$module" <<'EOF' 2>&1 | tail -2 | tr '\n' ' '
import importlib, sys, pathlib, numpy as np
folder, module = pathlib.Path(sys.argv[1]), sys.argv[2]
model = next(folder.glob("*.tflite"))
interp = importlib.import_module(module).Interpreter(model_path=str(model))
interp.allocate_tensors()
inp = interp.get_input_details()[0]
interp.set_tensor(inp["index"], np.zeros(inp["shape"], dtype=inp["dtype"]))
interp.invoke()
print("bare interpreter ok", interp.get_tensor(interp.get_output_details()[0]["index"]).ravel()[:2])
EOF
}

# What a two-core Cortex-A72 board (a Raspberry Pi 4) shows in /proc/cpuinfo.
arm_cpuinfo() {
    local cpu
    for cpu in 0 1; do
        printf 'processor\t: %s\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\n' "$cpu"
        printf 'CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\nCPU revision\t: 3\n\n'
    done
}

setup_emulator || { log "emulator setup failed"; exit 1; }
make_inputs || { log "inputs not made"; exit 1; }
summary=()
for spec in "ai_edge_litert||27" "tflite_runtime|[tflite]|34"; do
    IFS='|' read -r runtime extra glibc <<<"$spec"
    TARGET="$WORK/target-$runtime"; RUNDIR="$WORK/run-$runtime"
    if ! fetch_wheels "$TARGET" "$extra" "$glibc" 2>"$WORK/fetch-$runtime.log"; then
        summary+=("$runtime: no aarch64 wheels (manylinux_2_$glibc): $(tail -1 "$WORK/fetch-$runtime.log")"); continue
    fi
    start=$(date +%s)
    verdict="$(smoke "$runtime")"
    if [[ "$verdict" != ok* ]]; then
        log "$runtime failed: $verdict"
        verdict="$verdict | bare interpreter: $(bare_interpreter "${runtime}.interpreter")"
        arm_cpuinfo >"$SYSROOT/proc/cpuinfo"
        verdict="$verdict | with an aarch64 /proc/cpuinfo: $(smoke "$runtime")"
        rm -f "$SYSROOT/proc/cpuinfo"
    fi
    summary+=("$runtime (manylinux_2_$glibc wheels): $verdict in $(( $(date +%s) - start )) s")
done
log "work folder: $WORK"
printf '%s\n' "${summary[@]}"
