# ctest driver: installs the build tree into a fresh prefix, then configures, builds and runs a
# separate project that finds it with find_package(ternps).
#   cmake -DBUILD_DIR=... -DSOURCE_DIR=... -DWORK_DIR=... -P install_test.cmake
file(REMOVE_RECURSE "${WORK_DIR}")
set(prefix "${WORK_DIR}/prefix")
function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "failed (${rc}): ${ARGN}\n${out}")
  endif()
  message(STATUS "${out}")
endfunction()
run(${CMAKE_COMMAND} --install "${BUILD_DIR}" --prefix "${prefix}")
run(${CMAKE_COMMAND} -S "${SOURCE_DIR}/tests/install/consumer" -B "${WORK_DIR}/consumer"
    -DCMAKE_PREFIX_PATH=${prefix} -DCMAKE_BUILD_TYPE=Release)
run(${CMAKE_COMMAND} --build "${WORK_DIR}/consumer")
run("${WORK_DIR}/consumer/consumer")
if(PYTHON)
  # The installed package, alone on the path: its module finds the installed libternps_worker
  # (RPATH), and a bad address is refused by the C++ library with the error's code.
  execute_process(
    COMMAND ${CMAKE_COMMAND} -E env "PYTHONPATH=${prefix}/${PYTHON_DIR}" ${PYTHON} -c [=[
import ternps, ternps.client, ternps.ddp
assert ternps.__file__.startswith(__import__("sys").argv[1]), ternps.__file__
try:
    ternps.Worker(job_id="j", rank=0, world_size=1, shards=["127.0.0.1:0"], tensors=[("a", 1)])
except ternps.TernpsError as e:
    assert e.code == "INVALID_ARGUMENT", e
    print("installed ternps package:", ternps.__file__)
else:
    raise SystemExit("a bad shard address was accepted")
]=] ${prefix}
    RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "the installed Python package does not work (${rc}):\n${out}")
  endif()
  message(STATUS "${out}")
endif()
