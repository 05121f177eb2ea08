# The 8-rank ImageNet run takes tens of seconds in Release and far longer
# under the sanitizers: labelled slow, which tests/run skips in its ASan pass.
set_tests_properties(train_imagenet PROPERTIES LABELS slow TIMEOUT 900)
