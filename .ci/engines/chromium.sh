#!/usr/bin/env bash
# Headless Chromium for the dashboard tests in tests/web/: installs Debian's chromium and chromium-driver
# when either is missing (Selenium then drives this browser; nothing downloads a browser of its own).
# Idempotent: a no-op when both are there.
set -euo pipefail

need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
if [ "${#need[@]}" -gt 0 ]; then
  echo "installing: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
echo "chromium ready: $(chromium --version 2>/dev/null || echo '?'); $(chromedriver --version 2>/dev/null | head -n 1 || echo '?')"
