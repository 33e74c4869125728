# Finds BLIS (header blis.h, library libblis), which Debian ships without a pkg-config file.
# Defines BLIS_FOUND, BLIS_INCLUDE_DIR, BLIS_LIBRARY and the imported target BLIS::BLIS.
#
# Debian builds BLIS three ways (serial, pthreads, OpenMP) and the default, by priority, is the
# OpenMP one. mpipe runs one BLIS thread per rank (mp_gemm.c), and the OpenMP build still opens a
# one-thread parallel region around every call: a futex wake and ~0.6 us each, which a model of
# many small GEMMs pays hundreds of times a step (models/tiny.mp ran 1.6x faster on the serial
# build, same bits). So the serial build's header and library come first when it is installed
# (tools/setup installs it), and the binaries find it through their RPATH whatever the system's
# libblis.so.4 alternative points at; otherwise whatever blis.h and libblis the system has.
set(_blis_serial_inc /usr/include/${CMAKE_LIBRARY_ARCHITECTURE}/blis-serial)
set(_blis_serial_lib /usr/lib/${CMAKE_LIBRARY_ARCHITECTURE}/blis-serial)
find_path(BLIS_INCLUDE_DIR NAMES blis.h PATHS ${_blis_serial_inc} NO_DEFAULT_PATH)
find_path(BLIS_INCLUDE_DIR NAMES blis.h PATH_SUFFIXES blis)
find_library(BLIS_LIBRARY NAMES blis libblis.so.4 PATHS ${_blis_serial_lib} NO_DEFAULT_PATH)
find_library(BLIS_LIBRARY NAMES blis)
include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(BLIS REQUIRED_VARS BLIS_LIBRARY BLIS_INCLUDE_DIR)
if(BLIS_FOUND AND NOT TARGET BLIS::BLIS)
    add_library(BLIS::BLIS UNKNOWN IMPORTED)
    set_target_properties(BLIS::BLIS PROPERTIES IMPORTED_LOCATION "${BLIS_LIBRARY}"
                          INTERFACE_INCLUDE_DIRECTORIES "${BLIS_INCLUDE_DIR}")
endif()
mark_as_advanced(BLIS_INCLUDE_DIR BLIS_LIBRARY)
