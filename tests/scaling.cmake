# Two script tests (cmake -P this file, so that exit statuses and outputs
# can be checked):
#  - scaling: launch/scaling-model on fixed inputs, against values computed
#    by hand (below), and every message it prints for bad input;
#  - weak_scaling_usage: every message launch/weak-scaling prints for bad
#    input, and a failed training run, with stand-in tools (no training).
#
# The fixed bench: alexnet_owt's layers, forward 100 ms, update 10 ms,
# backward 200 ms: classifier.6 5, classifier.4 15, classifier.1 20,
# features.10/8/6 40 each, features.3 30, features.0 10 (the rest 0).
# 25 MiB buckets = 6553600 floats, cut from the end of 61100840:
#   buckets 0-2 start in classifier.4 (offset 40222528): ready at 5+15 = 20 ms
#   buckets 3-7 start in classifier.1: ready at 40 ms
#   bucket 8 starts at float 2118440, in features.10 (offset 1879616): 80 ms
#   bucket 9 is [0, 2118440): ready at the end, 200 ms
# P = 8 at 10 Gbit/s (1.25e9 B/s, efficiency 1, no latency, no local work):
#   a full bucket 2*7/8 * 26214400 / 1.25e9 = 36.70016 ms, bucket 9
#   2*7/8 * 8473760 / 1.25e9 = 11.863264 ms; all: 342.164704 ms.
#   Serially from 20 ms, bucket 8 ends at 20 + 9 * 36.70016 = 350.30144 and
#   bucket 9 at 362.164704: exposed 162.164704 ms, step 310 + 162.16 =
#   472.16 ms, 8 * 64 / 0.47216 = 1084.4 images/s, efficiency 310 / 472.16
#   = 65.7%.
#   bf16: 171.082352 ms in all; bucket 8 ends at 20 + 9 * 18.35008 =
#   185.15 < 200, bucket 9 runs 200 to 205.931632: exposed 5.9 ms.
#   With 10 us per ring step: + 10 buckets * 2*7 * 0.01 ms = 343.6 ms.
# PowerSGD rank 4, 1 ns per compressed float: alexnet_owt's 8 weight
#   matrices (61090496 floats) all compressed: 61.090496 ms of arithmetic;
#   biases 10344 + P 41376 floats, then Q 107436 floats, each a ring of 8 at
#   1.25e9 B/s: 1.75 * 4 * (51720 + 107436) / 1.25e9 = 0.891274 ms; all
#   61.98 ms, after backward: step 372.0 ms, 8 * 64 / 0.37198 = 1376.4 images/s.
# 2 ranks per node (16 ranks), flat ring: 2*15/16 of each bucket on the link:
#   9 * 39.3216 + 12.71064 = 366.6 ms; bucket 8 ends at 20 + 9 * 39.3216 =
#   373.89, bucket 9 at 386.6: exposed 186.6, 16 * 64 / 0.4966 = 2062.0.
#   Hierarchical: the ring of 8 leaders (342.164704) plus, per bucket, one
#   shared-memory allreduce of 2 ranks at 3.15 GB/s (latency 0):
#   26214400 / 3.15e9 = 8.322032 ms per full bucket, 2.690083 the last: 419.8.
# Floats into allreduces per step at rank 4 (r = min(4, out, rest); a matrix
#   is sent whole when out*rest < 2 (out+rest) r):
#   alexnet_cifar: (64+27 + 192+576 + 384+1728 + 256+3456 + 256+2304 +
#   4096+1024 + 4096+4096 + 10+4096) * 4 = 106644, plus 9354 biases: 115998.
#   fashion-mnist: conv1 (32, 9) is sent whole (288 < 2 * 41 * 4 = 328):
#   plain 288 + 2474 (biases, batch norms), P 5928, Q 21376: 30066.
# allreduce, alexnet_cifar on 2 hosts at 1 Gbit/s (efficiency 1, no latency):
#   23272266 floats, buckets of 6553600 from the end; the stand-in reports 16
#   pieces of 1454517 floats from the end, one per 100 ms of 1600: bucket 0
#   starts in piece 11 (ready 500 ms), 1 in piece 6 (1000), 2 in piece 2
#   (1400), 3 at 1600. 209.7152 ms per full bucket, 115.5669 the last: they
#   end at 709.7, 1209.7, 1609.7, 1725.3: exposed 125, total 745.

if(CMAKE_SCRIPT_MODE_FILE)
  # refuse(<status> <message> COMMAND...): that exit status, the message on stderr.
  function(refuse status message)
    execute_process(COMMAND ${ARGN} OUTPUT_VARIABLE out ERROR_VARIABLE err RESULT_VARIABLE rc)
    string(FIND "${err}" "${message}" at)
    if(NOT rc EQUAL status OR at EQUAL -1)
      string(JOIN " " cmd ${ARGN})
      string(APPEND failures "\n${cmd}: expected status ${status} and '${message}', got ${rc}: ${err}")
    endif()
    set(failures "${failures}" PARENT_SCOPE)
  endfunction()
endif()

if(CMAKE_SCRIPT_MODE_FILE AND PART STREQUAL "weak")
  find_program(bash_exe bash REQUIRED)
  set(ws ${bash_exe} ${SRC}/launch/weak-scaling) # bash by path: some runs have a PATH without it
  set(d ${TMP}/weak_scaling_usage)
  file(REMOVE_RECURSE ${d})
  file(MAKE_DIRECTORY ${d}/bin ${d}/nompi)
  # Stand-ins: a converter that writes its -o file and a trainer that fails.
  file(WRITE ${d}/bin/alexnet-convert
       "#!/bin/sh\nwhile [ $# -gt 0 ]; do [ \"$1\" = -o ] && : > \"$2\"; shift; done\n")
  file(WRITE ${d}/bin/alexnet-train "#!/bin/sh\necho 'stand-in trainer: no training here' >&2\nexit 3\n")
  execute_process(COMMAND chmod +x ${d}/bin/alexnet-convert ${d}/bin/alexnet-train)
  # A PATH with the one outside tool the checks need before mpirun: dirname.
  execute_process(COMMAND sh -c "ln -s \"$(command -v dirname)\" ${d}/nompi/dirname")
  set(failures "")
  set(env ${CMAKE_COMMAND} -E env ALEXNET_BIN_DIR=${d}/bin)
  refuse(2 "weak-scaling: unknown option '--bogus'" ${env} ${ws} --bogus)
  refuse(2 "weak-scaling: --steps needs a value" ${env} ${ws} --steps)
  refuse(2 "weak-scaling: --steps '0' must be at least 1" ${env} ${ws} --steps 0)
  refuse(2 "weak-scaling: --warmup 'x' must be a number >= 0" ${env} ${ws} --warmup x)
  refuse(2 "weak-scaling: --rounds '0' must be at least 1" ${env} ${ws} --rounds 0)
  refuse(2 "weak-scaling: --batch '-4' must be at least 1" ${env} ${ws} --batch -4)
  refuse(2 "weak-scaling: --config '${d}/none.yaml' is not a file" ${env} ${ws} --config ${d}/none.yaml)
  refuse(2 "weak-scaling: --data '${d}/none.h5' is not a file" ${env} ${ws} --data ${d}/none.h5)
  refuse(2 "weak-scaling: --independent needs taskset (util-linux)"
         ${env} PATH=${d}/nompi ${ws} --independent)
  refuse(2 "weak-scaling: ${d}/none/alexnet-train is not built (set ALEXNET_BIN_DIR to the build's bin)"
         ${CMAKE_COMMAND} -E env ALEXNET_BIN_DIR=${d}/none ${ws})
  refuse(2 "weak-scaling: mpirun is not on PATH" ${env} PATH=${d}/nompi ${ws})
  refuse(1 "weak-scaling: the run of row 1 failed (exit status 3); its log is ${d}/work/run-n1.log"
         ${env} ${ws} --steps 1 --warmup 0 --rounds 1 --work ${d}/work)
  file(READ ${d}/work/run-n1.log log)
  if(NOT log MATCHES "stand-in trainer: no training here")
    string(APPEND failures "\nthe failed run's log lacks the trainer's message:\n${log}")
  endif()
  if(failures)
    message(FATAL_ERROR "weak-scaling:${failures}")
  endif()
  return()
endif()

if(CMAKE_SCRIPT_MODE_FILE)
  set(model ${SRC}/launch/scaling-model)
  set(d ${TMP}/scaling)
  file(REMOVE_RECURSE ${d})
  file(MAKE_DIRECTORY ${d})
  set(names features.0 features.1 features.2 features.3 features.4 features.5 features.6
      features.7 features.8 features.9 features.10 features.11 features.12 avgpool
      classifier.0 classifier.1 classifier.2 classifier.3 classifier.4 classifier.5
      classifier.6)
  set(bwd 10 0 0 30 0 0 40 0 40 0 40 0 0 0 0 20 0 0 15 0 5)
  set(layers "")
  foreach(i RANGE 20)
    list(GET names ${i} n)
    list(GET bwd ${i} b)
    if(i GREATER 0)
      string(APPEND layers ",")
    endif()
    string(APPEND layers "{\"name\":\"${n}\",\"kind\":\"x\",\"forward_ms\":1,\"backward_ms\":${b}}")
  endforeach()
  set(head "\"batch\":64,\"threads\":2,\"forward_ms\":100,\"backward_ms\":200,\"update_ms\":10")
  file(WRITE ${d}/bench.json "{\"arch\":\"alexnet_owt\",${head},\"layers\":[${layers}]}")
  file(WRITE ${d}/bench-alexnet.json "{\"arch\":\"alexnet\",${head},\"layers\":[${layers}]}")
  file(WRITE ${d}/bench-nolayers.json "{\"arch\":\"alexnet_owt\",${head}}")
  file(WRITE ${d}/bench-empty.json "{\"arch\":\"alexnet_owt\",${head},\"layers\":[]}")
  file(WRITE ${d}/summary-empty.txt "total: 0 parameters\n")
  file(WRITE ${d}/summary-foo.txt "layer kind output parameters MFLOPs\nfoo conv 1 x 1 x 1 5 0.1\n")
  file(WRITE ${d}/weak.txt "| 1 | 1 | 64 | 20.00 | 100.0% |\n| 2 | 1 | 128 | 39.00 | 97.5% |\n")

  set(failures "")
  # expect(<list of regexes> ARGS...): exit status 0 and every regex.
  function(expect regexes)
    execute_process(COMMAND ${model} ${ARGN} OUTPUT_VARIABLE out ERROR_VARIABLE err
                    RESULT_VARIABLE rc)
    string(JOIN " " cmd ${ARGN})
    if(NOT rc EQUAL 0)
      string(APPEND failures "\nscaling-model ${cmd}: exit status ${rc}: ${err}")
    endif()
    foreach(re IN LISTS regexes)
      if(NOT out MATCHES "${re}")
        string(APPEND failures "\nscaling-model ${cmd}: no output matching '${re}' in:\n${out}")
      endif()
    endforeach()
    set(failures "${failures}" PARENT_SCOPE)
    set(last_out "${out}" PARENT_SCOPE)
  endfunction()

  set(fixed --bench ${d}/bench.json --nodes 8 --links 10 --link-efficiency 1 --local-ns 0,0 --long)
  # The ring term, the overlap and bf16 halving the bytes on the wire.
  expect("ready at 20, 20, 20, 40, 40, 40, 40, 40, 80, 200 ms;\\| 8 \\| 10 \\| none \\| 342\\.2 \\| 162\\.2 \\| 472\\.2 \\| 1084\\.4 \\| 65\\.7% \\|;\\| 8 \\| 10 \\| bf16 \\| 171\\.1 \\| 5\\.9 \\|"
         predict ${fixed} --latency-us 0)
  expect("\\| 8 \\| 10 \\| none \\| 343\\.6 \\|" predict ${fixed} --latency-us 10)
  # Compression and hierarchy.
  expect("\\| 8 \\| 10 \\| none \\| 342\\.2 \\|;\\| 8 \\| 10 \\| powersgd r4 \\| 62\\.0 \\| 62\\.0 \\| 372\\.0 \\| 1376\\.4 \\|;8 matrices compressed"
         predict ${fixed} --latency-us 0 --compress none,powersgd --powersgd-ns 1)
  expect("2 ranks per node, flat ring;\\| 8 \\| 10 \\| none \\| 366\\.6 \\| 186\\.6 \\| 496\\.6 \\| 2062\\.0 \\|"
         predict ${fixed} --latency-us 0 --compress none --ranks-per-node 2)
  expect("hierarchical;\\| 8 \\| 10 \\| none \\| 419\\.8 \\|"
         predict ${fixed} --latency-us 0 --compress none --ranks-per-node 2 --hierarchical on
         --shm-latency-us 0)
  expect("\\| alexnet_cifar \\| 23272266 \\| 93\\.089 \\| 46\\.545 \\| 115998 \\| 9354 \\| 37416 \\| 69228 \\| 8 of 8 \\|;\\| alexnet_owt \\| 61100840 \\| [0-9.]+ \\| [0-9.]+ \\| 159156 \\|;\\| fashion-mnist \\| 1246922 \\| [0-9.]+ \\| [0-9.]+ \\| 30066 \\| 2762 \\| 5928 \\| 21376 \\| 7 of 8 \\|"
         wire)
  expect("\\| 2 \\| 2 \\| 1 \\| none \\| 745 \\| 745 \\| 125 \\|"
         allreduce --net alexnet_cifar --hosts 2 --links 1 --backward-ms 1600 --local-ns 0,0
         --latency-us 0 --link-efficiency 1 --compress none)

  # The same buckets from a summary file instead of the built-in table.
  file(WRITE ${d}/summary.txt "layer kind output parameters MFLOPs\n"
       "features.0 conv 64 x 55 x 55 23296 140.6\nfeatures.3 conv 192 x 27 x 27 307392 447.9\n"
       "features.6 conv 384 x 13 x 13 663936 224.3\nfeatures.8 conv 256 x 13 x 13 884992 299.0\n"
       "features.10 conv 256 x 13 x 13 590080 199.4\nclassifier.1 linear 4096 x 1 x 1 37752832 75.5\n"
       "classifier.4 linear 4096 x 1 x 1 16781312 33.6\nclassifier.6 linear 1000 x 1 x 1 4097000 8.2\n")
  expect("\\| 8 \\| 10 \\| none \\| 342\\.2 \\| 162\\.2 \\|" predict ${fixed} --latency-us 0
         --summary ${d}/summary.txt)
  # --compute-ms scales every time: a 3100 ms step is 10x the bench's.
  expect("step 3100\\.0 ms \\(forward 1000\\.0, backward 2000\\.0, update 100\\.0\\)"
         predict --bench ${d}/bench.json --compute-ms 3100)
  # The built-in figures: no efficiency above 100%, the 1-rank check at 100%.
  expect("\\| 256 \\|" predict)
  string(REGEX MATCHALL "\\(([0-9.]+)%\\)" effs "${last_out}")
  list(LENGTH effs count)
  if(NOT count EQUAL 36)
    string(APPEND failures "\npredict: expected 36 efficiencies, found ${count}:\n${last_out}")
  endif()
  foreach(e IN LISTS effs)
    string(REGEX REPLACE "[()%]" "" v "${e}")
    if(v GREATER 100)
      string(APPEND failures "\npredict: efficiency ${v}% above 100%")
    endif()
  endforeach()
  expect("\\| 1 \\| 0\\.0 \\| 310\\.0 \\| 206\\.45 \\| 100\\.0% \\| 20\\.00 \\| 100\\.0% \\|;\\| 4 \\(oversubscribed\\) \\|"
         check --bench ${d}/bench.json --measured ${d}/weak.txt)
  expect("\\| 2 \\| [0-9.]+ \\| [0-9.]+ \\| [0-9.]+ \\| [0-9.]+% \\| 40\\.00 \\| 100\\.0% \\|"
         check --measured 1=20,2=40)

  # Every message for bad input.
  refuse(2 "scaling-model: --nodes: 'x' is not a positive integer" ${model} predict --nodes 8,x)
  refuse(2 "scaling-model: --links: '0' is not a positive number" ${model} predict --links 10,0)
  refuse(2 "scaling-model: --ranks: '-1' is not a positive integer" ${model} check --ranks=-1)
  refuse(2 "scaling-model: cannot read ${d}/missing.json: No such file or directory" ${model}
         predict --bench ${d}/missing.json)
  refuse(2 "scaling-model: ${d}/bench-nolayers.json: not alexnet-bench --json output (missing 'layers')" ${model}
         predict --bench ${d}/bench-nolayers.json)
  refuse(2 "scaling-model: ${d}/bench-empty.json: not alexnet-bench --json output (no layers or no time)" ${model}
         predict --bench ${d}/bench-empty.json)
  refuse(2 "scaling-model: ${d}/summary.txt: not alexnet-bench --json output (Expecting value" ${model}
         predict --bench ${d}/summary.txt)
  refuse(2 "scaling-model: no parameter table for arch 'alexnet': pass --summary FILE" ${model}
         predict --bench ${d}/bench-alexnet.json)
  refuse(2 "scaling-model: ${d}/summary-empty.txt: no layer with parameters" ${model}
         predict --summary ${d}/summary-empty.txt)
  refuse(2 "scaling-model: ${d}/summary-foo.txt: layer 'foo' has parameters but is not in the bench figures" ${model}
         predict --summary ${d}/summary-foo.txt)
  refuse(2 "scaling-model: --local-ns: '1' is not two numbers >= 0 (none,bf16)" ${model} predict --local-ns 1)
  refuse(2 "scaling-model: --compress: 'zip' is not one of none, bf16, fp16, powersgd" ${model}
         predict --compress none,zip)
  refuse(2 "scaling-model: --powersgd-rank: 0 is not positive" ${model} predict --powersgd-rank 0
         --compress powersgd)
  refuse(2 "scaling-model: --ranks-per-node: 0 is not positive" ${model} allreduce --ranks-per-node 0)
  refuse(2 "scaling-model: --hierarchical: on needs --ranks-per-node of 2 or more" ${model}
         predict --hierarchical on)
  refuse(2 "scaling-model: --net: no layer shapes for 'vgg' (known: alexnet, alexnet_owt, alexnet_cifar, fashion-mnist)"
         ${model} predict --compress powersgd --net vgg)
  refuse(2 "scaling-model: --net: no layer shapes for 'vgg'" ${model} wire --net vgg)
  refuse(2 "scaling-model: --pieces: 0 is not positive" ${model} allreduce --pieces 0)
  refuse(2 "scaling-model: --bucket-mb: 0 is not positive" ${model} predict --bucket-mb 0)
  refuse(2 "scaling-model: --compute-ms: -5 is not positive" ${model} predict --compute-ms=-5)
  refuse(2 "scaling-model: --link-efficiency: 1.5 is not in (0, 1]" ${model} predict --link-efficiency 1.5)
  refuse(2 "scaling-model: --steal: 2 is not in [0, 1]" ${model} predict --steal 2)
  refuse(2 "scaling-model: --latency-us: -1 is negative" ${model} check --latency-us=-1)
  refuse(2 "scaling-model: --max-gbs: -1 is negative" ${model} predict --max-gbs=-1)
  refuse(2 "scaling-model: --cores: 0 is not positive" ${model} check --cores 0)
  refuse(2 "scaling-model: --gbs: 0 is not positive" ${model} check --gbs 0)
  refuse(2 "scaling-model: --measured: '2=0' is not RANKS=IMAGES_PER_S with a positive figure" ${model}
         check --measured 1=20,2=0)
  refuse(2 "scaling-model: ${d}/summary.txt: no rows of weak-scaling's table" ${model} check --measured ${d}/summary.txt)
  refuse(2 "scaling-model predict: error: argument --latency-us: invalid float value: 'fast'" ${model}
         predict --latency-us fast)
  refuse(2 "scaling-model: error: argument mode: invalid choice: 'guess'" ${model} guess)

  if(failures)
    message(FATAL_ERROR "scaling-model:${failures}")
  endif()
  return()
endif()

add_test(NAME scaling
         COMMAND ${CMAKE_COMMAND} -DSRC=${CMAKE_SOURCE_DIR} -DTMP=${CMAKE_BINARY_DIR}/test-tmp
                 -P ${CMAKE_CURRENT_LIST_FILE})
add_test(NAME weak_scaling_usage
         COMMAND ${CMAKE_COMMAND} -DPART=weak -DSRC=${CMAKE_SOURCE_DIR}
                 -DTMP=${CMAKE_BINARY_DIR}/test-tmp -P ${CMAKE_CURRENT_LIST_FILE})
set_tests_properties(scaling weak_scaling_usage PROPERTIES TIMEOUT 60)
set_tests_properties(weak_scaling_usage PROPERTIES ENVIRONMENT "${ALEXNET_TEST_ENV}")
