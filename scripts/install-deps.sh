#!/usr/bin/env bash
# Install the Debian packages passnat's tests, lab and demo need (idempotent).
# Runs apt only when something is missing and we are root.
set -euo pipefail
PKGS="iproute2 iputils-ping ethtool nftables conntrack tcpdump tshark iperf3 util-linux procps
      pptp-linux pptpd strongswan-charon strongswan-swanctl libcharon-extra-plugins
      libstrongswan-standard-plugins python3-venv
      systemd prometheus chromium chromium-driver keepalived"
# systemd: systemd-analyze (the unit test); prometheus: a real server scrapes /metrics in a test;
# chromium + chromium-driver: the status page rendered in a headless browser (tests/lab);
# keepalived: VRRP for the active/standby pair (docs/ha.md, tests/lab/test_ha.py)
missing=()
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
    echo "install-deps: missing Debian packages (${missing[*]}); run as root to install them" >&2
    exit 0
fi
echo "install-deps: installing ${missing[*]}"
echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq || true
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
