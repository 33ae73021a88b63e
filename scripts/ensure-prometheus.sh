#!/usr/bin/env bash
# Make sure promtool, Prometheus, Alertmanager and amtool are on this machine.
# On Debian/Ubuntu as root they are installed with apt (about 10 s); anywhere
# else this says what is missing and how to get it, and fails.
set -euo pipefail

need=(promtool prometheus prometheus-alertmanager amtool)
missing=()
for bin in "${need[@]}"; do
  command -v "$bin" >/dev/null 2>&1 || missing+=("$bin")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "ensure-prometheus: missing ${missing[*]}"
if [ "$(id -u)" -eq 0 ] && [ -f /etc/debian_version ] && command -v apt-get >/dev/null 2>&1; then
  echo "ensure-prometheus: installing the Debian packages prometheus and prometheus-alertmanager"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends prometheus prometheus-alertmanager >/dev/null
  # The packages' services are not wanted here; tests start their own instances.
  for bin in "${need[@]}"; do
    command -v "$bin" >/dev/null 2>&1 || { echo "ensure-prometheus: $bin still missing after apt-get" >&2; exit 1; }
  done
  promtool --version 2>&1 | head -n 1
  exit 0
fi

cat >&2 <<MSG
ensure-prometheus: cannot install ${missing[*]} here (needs root on Debian/Ubuntu).
Install Prometheus >= 2.42 and Alertmanager >= 0.25, then run make again:
  Debian/Ubuntu: sudo apt-get install prometheus prometheus-alertmanager
  Otherwise:     https://prometheus.io/download/ (put promtool, prometheus,
                 alertmanager and amtool on PATH; link alertmanager as
                 prometheus-alertmanager)
MSG
exit 1
