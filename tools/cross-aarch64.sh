#!/usr/bin/env bash
# Cross-build upager for aarch64 with Debian's gcc-aarch64-linux-gnu.
#
# Usage: tools/cross-aarch64.sh [extra cmake configure args...]
# Env:   UPAGER_CROSS_BUILD_DIR (build-aarch64), UPAGER_SYSROOT (<build>/sysroot),
#        UPAGER_DEB_CACHE (<build>/debs)
#
# The arm64 libraries go into a sysroot of the build's own, unpacked with
# dpkg -x, not installed through multiarch: libjemalloc-dev and
# libcriterion-dev are not co-installable across architectures, so
# installing the arm64 ones would remove the host's.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
build=${UPAGER_CROSS_BUILD_DIR:-build-aarch64}
sysroot=${UPAGER_SYSROOT:-$build/sysroot}
cache=${UPAGER_DEB_CACHE:-$build/debs}
mkdir -p "$build" "$sysroot" "$cache"
sysroot=$(realpath "$sysroot") cache=$(realpath "$cache")

t0=$SECONDS stage=setup
# shellcheck disable=SC2154 # rc is assigned inside the trap
trap 'rc=$?; if ((rc)); then echo "cross-aarch64: FAILED during $stage (exit $rc)" >&2; fi' EXIT

# The machine's apt.conf turns apt's binary cache off (docker-clean), which
# makes every query reparse all lists (~1.5 s): keep one in the cache dir.
apt_opts=(-o "Dir::Cache::pkgcache=$cache/pkgcache.bin" -o Dir::Cache::srcpkgcache=)

# Host side. Root is needed only when something is missing.
host_pkgs=(cmake pkg-config gcc-aarch64-linux-gnu libc6-dev-arm64-cross libstdc++6-arm64-cross)
missing=()
for p in "${host_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
done
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
  dpkg --add-architecture arm64
fi
if ((${#missing[@]})) || ! apt-cache "${apt_opts[@]}" show liburing-dev:arm64 >/dev/null 2>&1; then
  apt-get update -q
fi
if ((${#missing[@]})); then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# The arm64 packages to unpack: the three -dev packages and what they depend
# on, because criterion.pc's Requires.private makes pkg-config demand the .pc
# files of its own dependencies, and ld must see every DT_NEEDED library.
# Walking stops at what /usr/aarch64-linux-gnu already provides (libc, libgcc,
# libstdc++, kernel headers) and at host tools; dependencies without an :arm64
# qualifier are arch-independent or Multi-Arch: foreign, nothing to link.
declare -A seen=()
level=(liburing-dev libjemalloc-dev libcriterion-dev)
pkgs=()
while ((${#level[@]})); do
  next=()
  for p in "${level[@]}"; do
    [[ -z ${seen[$p]:-} ]] || continue
    seen[$p]=1
    case $p in
      libc6 | libc6-dev | libgcc-s1 | libstdc++6 | gcc-*-base | linux-libc-dev | pkg-config | pkgconf*) ;;
      *) pkgs+=("$p") next+=("$p:arm64") ;;
    esac
  done
  ((${#next[@]})) || break
  mapfile -t level < <(apt-cache "${apt_opts[@]}" depends --no-recommends --no-suggests --no-conflicts \
      --no-breaks --no-replaces --no-enhances "${next[@]}" |
    sed -n 's/^ *|\{0,1\}\(Pre\)\{0,1\}Depends: \([^<][^ ]*\):arm64$/\2/p' | sort -u)
done

# Download only what the cache lacks, by the file names apt would give them.
mapfile -t debs < <(apt-get "${apt_opts[@]}" download --print-uris "${pkgs[@]/%/:arm64}" | cut -d' ' -f2)
# Process substitutions hide apt's failures from set -e; a short list shows them.
if ((${#debs[@]} != ${#pkgs[@]})); then
  echo "cross-aarch64: apt resolved ${#debs[@]} of ${#pkgs[@]} arm64 packages: ${pkgs[*]}" >&2
  exit 1
fi
fetch=()
for f in "${debs[@]}"; do
  [[ -f $cache/$f ]] || fetch+=("${f%%_*}:arm64")
done
if ((${#fetch[@]})); then
  # As root, apt drops to _apt for downloads, which cannot write to $cache.
  sandbox=()
  ((EUID)) || sandbox=(-o APT::Sandbox::User=root)
  (cd "$cache" && apt-get "${apt_opts[@]}" download -q "${sandbox[@]}" "${fetch[@]}")
fi

# Unpack afresh whenever the package set changes, so nothing stale lingers.
stamp="$sysroot/.upager-debs"
if [[ "$(cat "$stamp" 2>/dev/null)" != "$(printf '%s\n' "${debs[@]}")" ]]; then
  # Wipe only a tree this script made (or an empty one): UPAGER_SYSROOT may be mistyped.
  [[ -f $stamp || -z "$(ls -A "$sysroot")" ]] || { echo "$sysroot: not a sysroot made here" >&2; exit 1; }
  rm -rf "$sysroot" && mkdir -p "$sysroot"
  for f in "${debs[@]}"; do dpkg -x "$cache/$f" "$sysroot"; done
  # -dev symlinks such as libz.so -> /lib/.../libz.so.1 are absolute: aim
  # them inside the sysroot, not at the host.
  find "$sysroot" -type l -lname '/*' -print0 |
    while IFS= read -r -d '' l; do ln -sfnr "$sysroot$(readlink "$l")" "$l"; done
  printf '%s\n' "${debs[@]}" >"$stamp"
fi
t_setup=$((SECONDS - t0))

stage=configure
cmake -S . -B "$build" -DCMAKE_TOOLCHAIN_FILE=cmake/toolchain-aarch64.cmake \
  -DUPAGER_SYSROOT="$sysroot" -DCMAKE_BUILD_TYPE=Release \
  -DUPAGER_TESTS=ON -DUPAGER_BENCH=ON "$@"
stage=build
cmake --build "$build" -j2

# A stale cache or a stray CC could yield a host build that "passes".
stage=check
lib=$(find "$build" -maxdepth 1 -name 'libupager.so.*' -type f | head -n1)
aarch64-linux-gnu-readelf -h "${lib:-$build/libupager.so}" | grep -q 'Machine: *AArch64'

echo "cross-aarch64: OK: $build (${#pkgs[@]} arm64 packages in sysroot; setup ${t_setup}s, build $((SECONDS - t0 - t_setup))s)"
