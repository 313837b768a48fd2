#!/usr/bin/env bash
# System programs the tests drive for real: FluidSynth (plays exported SoundFonts).
# Idempotent: installs only what is missing (Debian/Ubuntu, as root or with sudo).
set -euo pipefail
missing=()
command -v fluidsynth >/dev/null 2>&1 || missing+=(fluidsynth)
[ ${#missing[@]} -eq 0 ] && exit 0
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get install -y --no-install-recommends "${missing[@]}" \
  || { $SUDO apt-get update && $SUDO apt-get install -y --no-install-recommends "${missing[@]}"; }
