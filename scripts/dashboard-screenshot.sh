#!/usr/bin/env bash
# Makes docs/dashboard.png, the README's picture of the dashboard: runs the browser test (a
# simulated cluster, headless Chromium through chromedriver), which leaves its screenshot in
# target/tmp/dashboard.png, and copies it. Needs Debian's chromium and chromium-driver.
set -euo pipefail
cd "$(dirname "$0")/.."
CUBE_REQUIRE_BROWSER=1 cargo test --test dashboard
cp target/tmp/dashboard.png docs/dashboard.png
echo "docs/dashboard.png updated"
