#!/usr/bin/env bash
# The Debian/Ubuntu packages the tests use, installed where missing (as root, with apt-get); elsewhere,
# or without root, it does nothing. Quiet, and never fails: a test that then lacks one says which.
#   libtcmalloc-minimal4     faster training: src/train.py preloads it by itself; nothing needs it
#   openjdk-17-jre-headless  Java for Spark: src/score_spark.py, tests/test_spark.py
#   chromium                 the headless browser of tests/test_serve.py (Debian's; Ubuntu's is a snap)
want=()
ldconfig -p 2>/dev/null | grep -q libtcmalloc_minimal.so.4 || want+=(libtcmalloc-minimal4)
command -v java >/dev/null || want+=(openjdk-17-jre-headless)
command -v chromium >/dev/null || want+=(chromium)
if [ ${#want[@]} -gt 0 ] && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  (apt-get install -y -qq "${want[@]}" || (apt-get update -qq && apt-get install -y -qq "${want[@]}")) >/dev/null 2>&1
fi
exit 0
