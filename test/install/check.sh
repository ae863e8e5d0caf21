#!/usr/bin/env bash
# Install the build into a scratch prefix, then build and run a program
# outside the tree against it through pkg-config and through CMake's
# find_package. Also checks that the library exports nothing but upg_*.
# usage: check.sh BUILD_DIR
set -euo pipefail
build=$(cd "$1" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

cmake --install "$build" --prefix "$tmp/prefix" >/dev/null
lib=$(find "$tmp/prefix" -name 'libupager.so' | head -1)
[ -n "$lib" ] || { echo "FAIL: libupager.so not installed"; exit 1; }
libdir=$(dirname "$lib")

leaked=$(nm -D --defined-only "$lib" | awk '$2 ~ /[TDBR]/ && $3 !~ /^upg_/ {print $3}')
[ -z "$leaked" ] || { echo "FAIL: symbols exported beside upg_*: $leaked"; exit 1; }

cat >"$tmp/hello.c" <<'C'
#include <stdio.h>
#include <string.h>
#include <upager.h>
int main(void)
{
	upg_ctx *ctx;
	upg_region *r;
	int ret = upg_ctx_create(NULL, &ctx);
	if (ret < 0) { printf("ctx: %s\n", upg_strerror(ret)); return ret == -EPERM ? 77 : 1; }
	if (upg_region_create(ctx, 1 << 20, NULL, &r) < 0) return 1;
	char *p = upg_region_addr(r);
	strcpy(p + 4096, "paged");
	ret = strcmp(p + 4096, "paged") != 0 || p[0] != 0;
	upg_region_destroy(r);
	upg_ctx_destroy(ctx);
	printf("upager %s: %s\n", upg_version(), ret ? "wrong" : "ok");
	return ret;
}
C
sed -i '1i #include <errno.h>' "$tmp/hello.c"

export PKG_CONFIG_PATH="$libdir/pkgconfig"
# shellcheck disable=SC2046
cc -o "$tmp/hello-pc" "$tmp/hello.c" $(pkg-config --cflags --libs upager)
LD_LIBRARY_PATH="$libdir" "$tmp/hello-pc"

mkdir -p "$tmp/proj"
cat >"$tmp/proj/CMakeLists.txt" <<'CM'
cmake_minimum_required(VERSION 3.18)
project(hello C)
find_package(upager REQUIRED)
add_executable(hello ../hello.c)
target_link_libraries(hello PRIVATE upager::upager)
CM
cmake -S "$tmp/proj" -B "$tmp/proj/build" -DCMAKE_PREFIX_PATH="$tmp/prefix" >/dev/null
cmake --build "$tmp/proj/build" >/dev/null
LD_LIBRARY_PATH="$libdir" "$tmp/proj/build/hello"
echo "install check passed"
