#!/usr/bin/env bash
# Make sure promtool, Prometheus, Alertmanager, amtool and the Pushgateway are on this machine (and
# Ruby, for two Fluentd tests, where apt can install it), the first four at least at the
# versions of versions.env (PROMETHEUS_MIN, ALERTMANAGER_MIN).
# On Debian/Ubuntu as root they are installed with apt (about 10 s); anywhere
# else this says what is missing and how to get it, and fails.
set -euo pipefail

# shellcheck disable=SC1091 # versions.env: KEY=VALUE lines only
. "$(dirname "$0")/../versions.env"

need=(promtool prometheus prometheus-alertmanager amtool prometheus-pushgateway)

# version_at_least HAVE WANT: true when HAVE >= WANT (dotted numbers)
version_at_least() {
  [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n 1)" = "$2" ]
}

# too_old: every installed tool older than its minimum, as "tool HAVE < WANT" lines
too_old() {
  local bin have want
  for bin in "${need[@]}"; do
    case $bin in
      promtool | prometheus) want=$PROMETHEUS_MIN ;;
      *) want=$ALERTMANAGER_MIN ;;
    esac
    have=$("$bin" --version 2>&1 | grep -oE '[0-9]+\.[0-9]+\.[0-9]+' | head -n 1 || true)
    if [ -z "$have" ] || ! version_at_least "$have" "$want"; then
      echo "$bin ${have:-(no version)} < $want"
    fi
  done
}

missing=()
for bin in "${need[@]}"; do
  command -v "$bin" >/dev/null 2>&1 || missing+=("$bin")
done

if [ ${#missing[@]} -gt 0 ]; then
  echo "ensure-prometheus: missing ${missing[*]}"
  if [ "$(id -u)" -eq 0 ] && [ -f /etc/debian_version ] && command -v apt-get >/dev/null 2>&1; then
    echo "ensure-prometheus: installing the Debian packages prometheus, prometheus-alertmanager and prometheus-pushgateway"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends prometheus prometheus-alertmanager prometheus-pushgateway >/dev/null
    # The packages' services are not wanted here; tests start their own instances.
    for bin in "${need[@]}"; do
      command -v "$bin" >/dev/null 2>&1 || { echo "ensure-prometheus: $bin still missing after apt-get" >&2; exit 1; }
    done
    promtool --version 2>&1 | head -n 1
  else
    cat >&2 <<MSG
ensure-prometheus: cannot install ${missing[*]} here (needs root on Debian/Ubuntu).
Install Prometheus >= $PROMETHEUS_MIN and Alertmanager >= $ALERTMANAGER_MIN, then run make again:
  Debian/Ubuntu: sudo apt-get install prometheus prometheus-alertmanager prometheus-pushgateway
  Otherwise:     https://prometheus.io/download/ (put promtool, prometheus,
                 alertmanager and amtool on PATH; link alertmanager as
                 prometheus-alertmanager)
MSG
    exit 1
  fi
fi

# Ruby: tests/test_fluentd_forwarder.py runs the forwarder's record code and regular expressions in
# Ruby, as Fluentd does; without it those two tests skip (so it is installed only where apt can).
if ! command -v ruby >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ] && [ -f /etc/debian_version ] \
  && command -v apt-get >/dev/null 2>&1; then
  echo "ensure-prometheus: installing the Debian package ruby (the forwarder's record code is tested in it)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends ruby >/dev/null
fi

old=$(too_old)
if [ -n "$old" ]; then
  echo "ensure-prometheus: too old (versions.env sets the minimums):" >&2
  while read -r line; do echo "  $line"; done <<<"$old" >&2
  exit 1
fi
