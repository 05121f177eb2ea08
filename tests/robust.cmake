# Issue 17's robustness tests beyond the generic registration in
# tests/CMakeLists.txt: full_disk needs a private mount namespace and reports
# SKIPPED (exit 77) without one.
if(TEST full_disk)
  set_tests_properties(full_disk PROPERTIES SKIP_RETURN_CODE 77)
endif()
if(TARGET test_full_disk)
  foreach(tool alexnet-train alexnet-convert)
    add_dependencies(test_full_disk ${tool})
  endforeach()
endif()
# byteflip runs alexnet-train (to make its checkpoint), alexnet-eval and
# alexnet-predict. A flipped size field makes HDF5 ask malloc for terabytes,
# which fails (NULL) and HDF5 reports; ASan would instead die of "allocator is
# out of memory": allocator_may_return_null gives it the Release behaviour.
if(TARGET test_byteflip)
  foreach(tool alexnet-train alexnet-eval alexnet-predict)
    add_dependencies(test_byteflip ${tool})
  endforeach()
  set(BYTEFLIP_ENV ${ALEXNET_TEST_ENV})
  list(TRANSFORM BYTEFLIP_ENV REPLACE "^ASAN_OPTIONS=(.*)$"
       "ASAN_OPTIONS=\\1:allocator_may_return_null=1")
  set_tests_properties(byteflip PROPERTIES ENVIRONMENT "${BYTEFLIP_ENV}")
endif()
if(TARGET test_ckpt_trust)
  foreach(tool alexnet-train alexnet-predict)
    add_dependencies(test_ckpt_trust ${tool})
  endforeach()
endif()
if(TARGET test_dataset_trust)
  add_dependencies(test_dataset_trust alexnet-train)
  set_tests_properties(dataset_trust PROPERTIES SKIP_RETURN_CODE 77)
endif()
