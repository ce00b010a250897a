# One interface target carries the project's warning flags; every mics target links it.
# -Wnull-dereference is left out: GCC 12 reports false positives inside libstdc++ and
# Boost.Program_options.
add_library(mics_warnings INTERFACE)
target_compile_options(mics_warnings INTERFACE
  $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wpedantic -Wshadow -Wnon-virtual-dtor
                            -Wold-style-cast -Wcast-align -Wunused -Woverloaded-virtual
                            -Wdouble-promotion -Wformat=2>
  $<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=-Wall,-Wextra>)
if(MICS_WARNINGS_AS_ERRORS)
  target_compile_options(mics_warnings INTERFACE
    $<$<COMPILE_LANGUAGE:CXX>:-Werror> $<$<COMPILE_LANGUAGE:CUDA>:-Werror=all-warnings>)
endif()
