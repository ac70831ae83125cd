#!/usr/bin/env bash
# Headless Chromium for the dashboard tests in tests/web/: installs Debian's chromium and chromium-driver
# when either is missing (Selenium then drives this browser; nothing downloads a browser of its own).
# Idempotent: a no-op when both are there.
set -euo pipefail

# shellcheck source=../lib/install-missing.sh
source "$(dirname "$0")/../lib/install-missing.sh"
install_missing chromium=chromium chromedriver=chromium-driver
echo "chromium ready: $(chromium --version 2>/dev/null || echo '?'); $(chromedriver --version 2>/dev/null | head -n 1 || echo '?')"
