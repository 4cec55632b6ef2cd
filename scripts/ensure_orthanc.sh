#!/usr/bin/env bash
# Make sure Debian's Orthanc and its DICOMweb plugin are installed for the PACS tests
# (tests/support/orthanc.py starts its own Orthanc on free loopback ports; the system
# service the package may install is never used). Installs them with apt-get when missing
# and we may (root, or passwordless sudo); otherwise says what to run.
set -euo pipefail
PLUGIN=/usr/share/orthanc/plugins/libOrthancDicomWeb.so
have_orthanc() {
    { command -v Orthanc >/dev/null 2>&1 || [[ -x /usr/sbin/Orthanc ]]; } && [[ -e $PLUGIN ]]
}
if have_orthanc; then
    exit 0
fi
if [[ $(id -u) -eq 0 ]]; then
    apt=(apt-get)
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    apt=(sudo apt-get)
else
    echo "ensure_orthanc: Orthanc is missing; install it with:" \
        "sudo apt-get install orthanc orthanc-dicomweb" >&2
    exit 1
fi
echo "ensure_orthanc: installing Debian's orthanc and orthanc-dicomweb (for the PACS tests)" >&2
export DEBIAN_FRONTEND=noninteractive
"${apt[@]}" install -y -q orthanc orthanc-dicomweb >/dev/null || {
    "${apt[@]}" update -q >/dev/null
    "${apt[@]}" install -y -q orthanc orthanc-dicomweb >/dev/null
}
have_orthanc
