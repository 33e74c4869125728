# Finds BLIS (header blis.h, library libblis), which Debian ships without a pkg-config file.
# Defines BLIS_FOUND, BLIS_INCLUDE_DIR, BLIS_LIBRARY and the imported target BLIS::BLIS.
find_path(BLIS_INCLUDE_DIR NAMES blis.h PATH_SUFFIXES blis)
find_library(BLIS_LIBRARY NAMES blis)
include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(BLIS REQUIRED_VARS BLIS_LIBRARY BLIS_INCLUDE_DIR)
if(BLIS_FOUND AND NOT TARGET BLIS::BLIS)
    add_library(BLIS::BLIS UNKNOWN IMPORTED)
    set_target_properties(BLIS::BLIS PROPERTIES IMPORTED_LOCATION "${BLIS_LIBRARY}"
                          INTERFACE_INCLUDE_DIRECTORIES "${BLIS_INCLUDE_DIR}")
endif()
mark_as_advanced(BLIS_INCLUDE_DIR BLIS_LIBRARY)
