# Writes OUT, a C file giving the commit being built (mp_git_hash), and rewrites it only when the
# commit changed, so that only that file recompiles. Run at every build (CMakeLists.txt): taken
# once at configure time, the hash went stale in a build directory configured commits ago, and
# `mpipe --version`, benchmark headers and the rates cache key all carry it.
# Usage: cmake -DSRC=source-dir -DOUT=file.c -P version_hash.cmake
execute_process(COMMAND git rev-parse --short HEAD WORKING_DIRECTORY ${SRC}
                OUTPUT_VARIABLE hash OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
if(NOT hash)
    set(hash "unknown")
else()
    # A tree with changes not committed is not that commit: "-dirty", so that its figures (and
    # its rates cache, keyed by this) are not taken for the commit's. Untracked files do not count.
    execute_process(COMMAND git diff --quiet HEAD -- WORKING_DIRECTORY ${SRC}
                    RESULT_VARIABLE dirty ERROR_QUIET)
    if(dirty EQUAL 1)
        set(hash "${hash}-dirty")
    endif()
endif()
set(text "/* Written by cmake/version_hash.cmake at build time. */\n#include \"mp_cli.h\"\n\nconst char *mp_git_hash(void) { return \"${hash}\"; }\n")
set(old "")
if(EXISTS ${OUT})
    file(READ ${OUT} old)
endif()
if(NOT old STREQUAL text)
    file(WRITE ${OUT} "${text}")
endif()
