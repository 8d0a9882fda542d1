#!/usr/bin/env bash
# Debian/Ubuntu packages the tests need. Installed as root, or through passwordless sudo (GitHub's
# runners); otherwise each missing one is named so a person can install it. A browser already on
# PATH as `chromium` counts (GitHub's Ubuntu runners ship one; Ubuntu's package is a snap stub).
set -euo pipefail

# postgresql, prometheus (with promtool), prometheus-alertmanager (amtool checks the receivers'
# routing), nftables, iproute2 and openssl: the local run of the
# platform (network namespaces, NetworkPolicies as nftables rules, a private CA for its git host).
packages=(git ca-certificates postgresql chromium prometheus prometheus-alertmanager nftables iproute2 openssl)

missing=()
for package in "${packages[@]}"; do
  if [ "$package" = chromium ] && command -v chromium >/dev/null 2>&1; then
    continue
  fi
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ]; then
  as_root=()
elif sudo -n true 2>/dev/null; then
  as_root=(sudo -n)
else
  echo "setup-system: missing packages: ${missing[*]} (install them, or run as root)" >&2
  exit 1
fi
echo "setup-system: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update -qq
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
