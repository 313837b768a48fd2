#!/usr/bin/env bash
# System programs and libraries the tests drive for real:
# - FluidSynth (plays exported SoundFonts) and Chromium (the instrument's end-to-end test, driven by
#   Playwright through its executable path);
# - the plug-in's build (plugin/, `make plugin`): a C++ compiler, CMake, JUCE 7 from Debian (its CMake
#   package, juceaide, the VST3 and LV2 SDKs) and the X11/ALSA/freetype headers JUCE's GUI and
#   standalone app compile against, and FFTW (the phase retrieval's FFTs);
# - lilv-utils (lv2info: Debian's LV2 stack reads the plug-in's LV2 bundle) and Xvfb (the standalone
#   app runs headless for its screenshot).
# Idempotent: installs only what is missing (Debian/Ubuntu, as root or with sudo).
set -euo pipefail
missing=()
command -v fluidsynth >/dev/null 2>&1 || missing+=(fluidsynth)
command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || missing+=(chromium)
for pkg in g++ make cmake pkg-config juce-modules-source juce-modules-source-data juce-tools \
           libasound2-dev libfreetype-dev libfontconfig-dev libx11-dev libxext-dev libxrandr-dev \
           libxinerama-dev libxcursor-dev libfftw3-dev lv2-dev lilv-utils xvfb xauth; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get install -y --no-install-recommends "${missing[@]}" \
  || { $SUDO apt-get update && $SUDO apt-get install -y --no-install-recommends "${missing[@]}"; }
