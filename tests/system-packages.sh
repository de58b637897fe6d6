#!/usr/bin/env bash
# The Debian/Ubuntu packages the tests use, installed where missing (as root, with apt-get), each on its own,
# so one that cannot be installed does not stop the others; a line says which could not be. Never fails:
# a test that then lacks one says which package it needs.
#   libtcmalloc-minimal4     faster training: src/train.py preloads it by itself; its tests skip without it
#   openjdk-17-jre-headless  Java for Spark: src/score_spark.py, tests/test_spark.py
#   chromium                 the headless browser of tests/test_serve.py (Debian's; Ubuntu's is a snap)
want=()
ldconfig -p 2>/dev/null | grep -q libtcmalloc_minimal.so.4 || want+=(libtcmalloc-minimal4)
command -v java >/dev/null || want+=(openjdk-17-jre-headless)
command -v chromium >/dev/null || command -v chromium-browser >/dev/null || want+=(chromium)
[ ${#want[@]} -gt 0 ] || exit 0
if ! command -v apt-get >/dev/null || [ "$(id -u)" != 0 ]; then
  echo "tests/system-packages.sh: not installing ${want[*]} (needs apt-get and root); the tests that use them say so"
  exit 0
fi
updated=
for package in "${want[@]}"; do
  if ! apt-get install -y -qq "$package" >/dev/null 2>&1; then
    [ -n "$updated" ] || { apt-get update -qq >/dev/null 2>&1; updated=1; }
    apt-get install -y -qq "$package" >/dev/null 2>&1 || echo "tests/system-packages.sh: could not install $package"
  fi
done
exit 0
