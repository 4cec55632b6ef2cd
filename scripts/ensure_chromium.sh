#!/usr/bin/env bash
# Make sure Debian's chromium is installed for the viewer's browser test (Playwright drives
# it through executable_path; no browser is ever downloaded). Installs it with apt-get when
# missing and we may (root, or passwordless sudo); otherwise says what to run.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
    exit 0
fi
if [[ $(id -u) -eq 0 ]]; then
    apt=(apt-get)
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    apt=(sudo apt-get)
else
    echo "ensure_chromium: chromium is missing; install it with: sudo apt-get install chromium" >&2
    exit 1
fi
echo "ensure_chromium: installing Debian's chromium (for the viewer's browser test)" >&2
export DEBIAN_FRONTEND=noninteractive
"${apt[@]}" install -y -q chromium >/dev/null || {
    "${apt[@]}" update -q >/dev/null
    "${apt[@]}" install -y -q chromium >/dev/null
}
command -v chromium >/dev/null
