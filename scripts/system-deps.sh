#!/usr/bin/env bash
# System programs the tests drive for real: FluidSynth (plays exported SoundFonts) and Chromium
# (the instrument's end-to-end test, driven by Playwright through its executable path).
# Idempotent: installs only what is missing (Debian/Ubuntu, as root or with sudo).
set -euo pipefail
missing=()
command -v fluidsynth >/dev/null 2>&1 || missing+=(fluidsynth)
command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || missing+=(chromium)
[ ${#missing[@]} -eq 0 ] && exit 0
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get install -y --no-install-recommends "${missing[@]}" \
  || { $SUDO apt-get update && $SUDO apt-get install -y --no-install-recommends "${missing[@]}"; }
