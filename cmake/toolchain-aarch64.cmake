# Cross-compile for aarch64 Linux with Debian's gcc-aarch64-linux-gnu.
#
# UPAGER_SYSROOT (cache variable, or environment variable of the same name)
# names a directory into which arm64 .debs were unpacked with `dpkg -x`
# (tools/cross-aarch64.sh makes one): libraries in usr/lib/aarch64-linux-gnu,
# headers in usr/include and usr/include/aarch64-linux-gnu.
#
# It is deliberately not passed to gcc as --sysroot: the cross gcc's own
# sysroot, /usr/aarch64-linux-gnu (libc6-dev-arm64-cross), holds libc, and
# the unpacked tree does not. The unpacked tree is added beside it instead.

set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_LIBRARY_ARCHITECTURE aarch64-linux-gnu)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)

# This file is read again for every try_compile, where the main project's
# cache is absent: the environment carries the value there.
if(NOT UPAGER_SYSROOT AND DEFINED ENV{UPAGER_SYSROOT})
  set(UPAGER_SYSROOT "$ENV{UPAGER_SYSROOT}")
endif()
if(NOT UPAGER_SYSROOT OR NOT IS_DIRECTORY "${UPAGER_SYSROOT}/usr/lib/aarch64-linux-gnu")
  message(FATAL_ERROR "toolchain-aarch64: set UPAGER_SYSROOT to a directory of unpacked arm64 "
    ".debs (tools/cross-aarch64.sh makes one); got '${UPAGER_SYSROOT}'")
endif()
get_filename_component(UPAGER_SYSROOT "${UPAGER_SYSROOT}" ABSOLUTE)
set(UPAGER_SYSROOT "${UPAGER_SYSROOT}" CACHE PATH "Unpacked arm64 .debs for the aarch64 cross build")
set(ENV{UPAGER_SYSROOT} "${UPAGER_SYSROOT}")
list(APPEND CMAKE_TRY_COMPILE_PLATFORM_VARIABLES UPAGER_SYSROOT)

set(_upg_libdirs "${UPAGER_SYSROOT}/usr/lib/aarch64-linux-gnu" "${UPAGER_SYSROOT}/lib/aarch64-linux-gnu")

# -isystem rather than -I: these are third-party headers, kept out of the
# project's warnings, and gcc drops pkg-config's -I for the same directory.
# They come before the cross gcc's default /usr/include, which holds the
# host's (amd64) headers.
set(CMAKE_C_FLAGS_INIT
  "-isystem ${UPAGER_SYSROOT}/usr/include/aarch64-linux-gnu -isystem ${UPAGER_SYSROOT}/usr/include")

# -rpath-link: ld must resolve the DT_NEEDED chain of the unpacked libraries
# (libcriterion.so -> libgit2 -> libssh2 -> ...) that nothing names with -l.
# CMake takes these -L directories for implicit (system) ones, so binaries get
# no RPATH into the sysroot: on the target, its libraries belong in
# /usr/lib/aarch64-linux-gnu, or LD_LIBRARY_PATH must name them.
set(_upg_ldflags "")
foreach(_d IN LISTS _upg_libdirs)
  string(APPEND _upg_ldflags " -L${_d} -Wl,-rpath-link,${_d}")
endforeach()
foreach(_kind EXE SHARED MODULE)
  set(CMAKE_${_kind}_LINKER_FLAGS_INIT "${_upg_ldflags}")
endforeach()

# find_library/find_path/find_package look in the target trees only;
# programs (pkg-config, qemu) come from the host.
set(CMAKE_FIND_ROOT_PATH "${UPAGER_SYSROOT}" /usr/aarch64-linux-gnu)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)

# The host pkg-config, pointed at the sysroot's .pc files only: LIBDIR
# replaces the host's search path, SYSROOT_DIR prefixes the -I/-L it prints.
set(ENV{PKG_CONFIG_LIBDIR}
  "${UPAGER_SYSROOT}/usr/lib/aarch64-linux-gnu/pkgconfig:${UPAGER_SYSROOT}/usr/share/pkgconfig")
set(ENV{PKG_CONFIG_SYSROOT_DIR} "${UPAGER_SYSROOT}")
set(ENV{PKG_CONFIG_PATH} "")
