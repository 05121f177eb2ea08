# data's tests beyond the generic registration in tests/CMakeLists.txt:
# - test_data_format builds its malformed files with the HDF5 API itself, so
#   it needs HDF5's headers (data keeps them private);
# - test_data_convert runs the alexnet-convert executable, so building the
#   test builds it too.
if(TARGET test_data_format)
  target_include_directories(test_data_format PRIVATE ${HDF5_C_INCLUDE_DIRS})
endif()
if(TARGET test_data_convert AND TARGET alexnet-convert)
  add_dependencies(test_data_convert alexnet-convert)
endif()
# test_data_jpeg reads its reference file with HDF5 and runs alexnet-convert
# (also under mpiexec).
if(TARGET test_data_jpeg)
  target_include_directories(test_data_jpeg PRIVATE ${HDF5_C_INCLUDE_DIRS})
  if(TARGET alexnet-convert)
    add_dependencies(test_data_jpeg alexnet-convert)
  endif()
endif()
# Cases that need what a machine may lack run as their own entries, which
# ctest reports as skipped where it is missing (tests/CMakeLists.txt).
if(TARGET test_data_format)
  alexnet_env_cases(data_format h5dump "layout for h5dump")
endif()
if(TARGET test_data_convert)
  alexnet_env_cases(data_convert fashion_mnist "fashion-mnist")
endif()
