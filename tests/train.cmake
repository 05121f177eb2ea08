# The 8-rank ImageNet run takes tens of seconds in Release and far longer
# under the sanitizers: labelled slow, which tests/run skips in its ASan pass.
set_tests_properties(train_imagenet PROPERTIES LABELS slow TIMEOUT 900)

# launch/plot-run draws metrics.jsonl (train and val lines) to a PNG, and
# names a run directory without metrics.
add_test(NAME plot_run COMMAND bash -c "
  set -e
  d=${CMAKE_BINARY_DIR}/test-tmp/plot_run; rm -rf \$d; mkdir -p \$d
  for s in 1 2 3 4; do
    echo '{\"step\":'\$s',\"epoch\":0,\"split\":\"train\",\"loss\":'\$((5 - s))'.5,\"top1\":0.'\$s',\"lr\":0.1,\"images_per_sec\":10'\$s'}' >> \$d/metrics.jsonl
  done
  echo '{\"step\":4,\"epoch\":0,\"split\":\"val\",\"loss\":1.5,\"top1\":0.5,\"top5\":0.9}' >> \$d/metrics.jsonl
  ${CMAKE_SOURCE_DIR}/launch/plot-run \$d
  test -s \$d/metrics.png
  if ${CMAKE_SOURCE_DIR}/launch/plot-run \$d/missing 2> \$d/err; then exit 1; fi
  grep -q 'missing/metrics.jsonl does not exist' \$d/err")
