# mics_add_test(NAME name SOURCES ... [LIBS ...] [RANKS n ...] [LABELS ...] [TIMEOUT s])
#
# Without RANKS the test is a plain Boost.Test program (no MPI). With RANKS it is linked
# against the MPI test main (every rank returns the global verdict) and registered once
# per rank count as name_np<N>, run through mpiexec with oversubscription, since the
# machines the suite runs on have fewer cores than ranks.
set(MICS_TEST_ENV
  OMPI_ALLOW_RUN_AS_ROOT=1
  OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
  OMPI_MCA_rmaps_base_oversubscribe=1
  OMPI_MCA_mpi_yield_when_idle=1
  OMPI_MCA_btl_vader_single_copy_mechanism=none
  OMP_NUM_THREADS=1
  OMP_WAIT_POLICY=passive
  OPENBLAS_NUM_THREADS=1
  # As mics::MpiEnvironment asks: the MPI collectives then run their progress thread.
  OMPI_MPI_THREAD_LEVEL=3)

function(mics_add_test)
  cmake_parse_arguments(T "" "NAME;TIMEOUT" "SOURCES;LIBS;RANKS;LABELS" ${ARGN})
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 300)
  endif()
  add_executable(${T_NAME} ${T_SOURCES})
  target_link_libraries(${T_NAME} PRIVATE ${T_LIBS} mics_warnings)
  if(T_RANKS)
    target_link_libraries(${T_NAME} PRIVATE mics_test_mpi_main)
    foreach(n IN LISTS T_RANKS)
      add_test(NAME ${T_NAME}_np${n}
               COMMAND ${MPIEXEC_EXECUTABLE} ${MPIEXEC_NUMPROC_FLAG} ${n} --bind-to none
                       ${MPIEXEC_PREFLAGS} $<TARGET_FILE:${T_NAME}> ${MPIEXEC_POSTFLAGS}
                       --color_output=no)
      set_tests_properties(${T_NAME}_np${n} PROPERTIES
        PROCESSORS ${n} TIMEOUT ${T_TIMEOUT}
        ENVIRONMENT "${MICS_TEST_ENV}" LABELS "mpi;${T_LABELS}")
    endforeach()
  else()
    target_link_libraries(${T_NAME} PRIVATE mics_test_main)
    add_test(NAME ${T_NAME} COMMAND $<TARGET_FILE:${T_NAME}> --color_output=no)
    set_tests_properties(${T_NAME} PROPERTIES TIMEOUT ${T_TIMEOUT}
      ENVIRONMENT "${MICS_TEST_ENV}" LABELS "unit;${T_LABELS}")
  endif()
endfunction()

# mics_add_cli_test(NAME name COMMAND ... [RANKS n] [PASS_REGEX re] [WILL_FAIL])
# A test of a program's behaviour as a user sees it (exit code and output).
function(mics_add_cli_test)
  cmake_parse_arguments(T "WILL_FAIL" "NAME;RANKS;PASS_REGEX;TIMEOUT" "COMMAND;LABELS" ${ARGN})
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 300)
  endif()
  if(T_RANKS)
    add_test(NAME ${T_NAME} COMMAND ${MPIEXEC_EXECUTABLE} ${MPIEXEC_NUMPROC_FLAG} ${T_RANKS}
             --bind-to none ${T_COMMAND})
  else()
    add_test(NAME ${T_NAME} COMMAND ${T_COMMAND})
  endif()
  set_tests_properties(${T_NAME} PROPERTIES TIMEOUT ${T_TIMEOUT}
    ENVIRONMENT "${MICS_TEST_ENV}" LABELS "cli;${T_LABELS}")
  if(T_PASS_REGEX)
    set_tests_properties(${T_NAME} PROPERTIES PASS_REGULAR_EXPRESSION "${T_PASS_REGEX}")
  endif()
  if(T_WILL_FAIL)
    set_tests_properties(${T_NAME} PROPERTIES WILL_FAIL TRUE)
  endif()
endfunction()
