#!/usr/bin/env bash
# Run the test suite on a real arm64 Linux kernel: Debian's cloud-arm64 kernel
# (6.1) in qemu-system-aarch64 under software emulation (TCG).
#
# Usage: tools/arm64-lane.sh
# Env:   UPAGER_CROSS_BUILD_DIR  cross build, also holds this lane's cache (build-aarch64);
#        it and UPAGER_SYSROOT, UPAGER_DEB_CACHE go to tools/cross-aarch64.sh
#        UPAGER_ARM64_TESTS      test executables to run (default: every test/test_*)
#        UPAGER_ARM64_TEST_TIMEOUT  seconds per test executable in the guest (600)
#        UPAGER_ARM64_TIMEOUT    seconds for the whole guest run (1500)
#        UPAGER_ARM64_MEM        guest memory (3G); UPAGER_ARM64_SMP guest CPUs (2)
#        UPAGER_ARM64_CRITERION  extra Criterion arguments, e.g. --filter='events/*'
#        UPAGER_LOG, UPAGER_TEST_*  passed into the guest's environment
#
# Steps: cross-build (tools/cross-aarch64.sh); fetch the kernel and a static
# busybox as arm64 .debs; an initramfs with busybox, tools/arm64/init, the
# tests, the upager CLI and exactly the shared libraries they load; a fresh
# ext4 disk image for /tmp (swap files want O_DIRECT, which tmpfs lacks);
# boot; read the guest's verdict from the console (tools/arm64/init prints it).
# Exits 0 only when the guest printed "ARM64-LANE: ... 0 failed".
set -euo pipefail
# Software emulation runs several times slower than the host: the tests'
# deadlines stretch by this much unless the caller says otherwise.
export UPAGER_TEST_TIME_SCALE=${UPAGER_TEST_TIME_SCALE:-4}

cd "$(dirname "${BASH_SOURCE[0]}")/.."
src=$PWD
build=${UPAGER_CROSS_BUILD_DIR:-build-aarch64}
test_timeout=${UPAGER_ARM64_TEST_TIMEOUT:-600}
guest_timeout=${UPAGER_ARM64_TIMEOUT:-1500}
mem=${UPAGER_ARM64_MEM:-3G}
smp=${UPAGER_ARM64_SMP:-2}
criterion_args=${UPAGER_ARM64_CRITERION:-}

say() { printf 'arm64-lane: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }
t_start=$SECONDS

# Host tools. Root is needed only when something is missing.
host_pkgs=(qemu-system-arm e2fsprogs cpio)
missing=()
for p in "${host_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  ((EUID == 0)) || die "missing packages (${missing[*]}); run as root or install them"
  say "installing ${missing[*]}"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# The cross build adds arm64 to dpkg's architectures and refreshes apt's lists
# when it must, which the kernel look-up below relies on.
export UPAGER_CROSS_BUILD_DIR=$build
tools/cross-aarch64.sh
build=$(realpath "$build")
sysroot=$(realpath "${UPAGER_SYSROOT:-$build/sysroot}")
lane=$build/arm64-lane
cache=$lane/debs
mkdir -p "$cache"
t_build=$SECONDS

# Kernel and busybox. linux-image-cloud-arm64 is a metapackage: follow it to
# the versioned image, so that a new kernel ABI is picked up by itself.
apt_opts=(-o "Dir::Cache::pkgcache=$cache/pkgcache.bin" -o Dir::Cache::srcpkgcache=)
fetch_debs() {
  local f fetch=() sandbox=()
  kpkg=$(apt-cache "${apt_opts[@]}" depends linux-image-cloud-arm64:arm64 |
    sed -n 's/^ *Depends: \(linux-image-[0-9][^ :]*-cloud-arm64\)\(:arm64\)\{0,1\}$/\1/p' | head -n1)
  [[ -n $kpkg ]] || { say "cannot resolve linux-image-cloud-arm64:arm64"; return 1; }
  pkgs=("$kpkg" busybox-static)
  mapfile -t debs < <(apt-get "${apt_opts[@]}" download --print-uris "${pkgs[@]/%/:arm64}" | cut -d' ' -f2)
  ((${#debs[@]} == ${#pkgs[@]})) || { say "apt resolved ${#debs[@]} of ${#pkgs[@]}: ${pkgs[*]}"; return 1; }
  for f in "${debs[@]}"; do
    [[ -f $cache/$f ]] || fetch+=("${f%%_*}:arm64")
  done
  ((${#fetch[@]})) || return 0
  # As root, apt drops to _apt for downloads, which cannot write to $cache.
  ((EUID)) || sandbox=(-o APT::Sandbox::User=root)
  (cd "$cache" && apt-get "${apt_opts[@]}" download -q "${sandbox[@]}" "${fetch[@]}")
}
# Stale lists name a kernel the mirror no longer has: refresh them once.
if ! fetch_debs; then
  ((EUID == 0)) || die "cannot fetch the arm64 kernel; an apt-get update as root may help"
  apt-get update -q
  fetch_debs || die "cannot fetch the arm64 kernel and busybox"
fi
pkgroot=$lane/pkgroot
stamp=$pkgroot/.upager-debs
if [[ "$(cat "$stamp" 2>/dev/null)" != "$(printf '%s\n' "${debs[@]}")" ]]; then
  rm -rf "$pkgroot" && mkdir -p "$pkgroot"
  for f in "${debs[@]}"; do dpkg -x "$cache/$f" "$pkgroot"; done
  printf '%s\n' "${debs[@]}" >"$stamp"
fi
# Debian's arm64 vmlinuz is a plain (EFI-stub) Image, which qemu boots as it is.
kernel=$(find "$pkgroot/boot" -name 'vmlinuz-*' | head -n1)
kconfig=$(find "$pkgroot/boot" -name 'config-*' | head -n1)
[[ -f $kernel && -f $kconfig ]] || die "no vmlinuz/config in $kpkg"

# The initramfs, built afresh: stale tests must not run.
root=$lane/root
rm -rf "$root"
mkdir -p "$root"/{bin,dev,proc,sys,tmp,tests,lib/modules,lib/aarch64-linux-gnu}
cp "$pkgroot/bin/busybox" "$root/bin/busybox"
ln -s busybox "$root/bin/sh"
install -m 755 "$src/tools/arm64/init" "$root/init"

# virtio-mmio disk: these are modules in the cloud kernel (4 KiB pages, ext4
# built in). Copy those that are modules, in dependency order.
: >"$root/lib/modules/order"
for m in VIRTIO:virtio_ring VIRTIO:virtio VIRTIO_MMIO:virtio_mmio VIRTIO_BLK:virtio_blk; do
  opt=${m%%:*} mod=${m#*:}
  case $(sed -n "s/^CONFIG_$opt=//p" "$kconfig") in
    y) ;;
    m)
      ko=$(find "$pkgroot/lib/modules" -name "$mod.ko" | head -n1)
      [[ -n $ko ]] || die "$mod.ko missing (compressed modules are not handled)"
      cp "$ko" "$root/lib/modules/"
      echo "$mod" >>"$root/lib/modules/order"
      ;;
    *) die "kernel lacks CONFIG_$opt" ;;
  esac
done
grep -q '^CONFIG_EXT4_FS=y' "$kconfig" || die "kernel lacks a built-in ext4"

# Tests: every test executable the cross build made, unless a list is given.
# (test/install/check.sh and the benchmark smoke test are host-only.)
if [[ -n ${UPAGER_ARM64_TESTS:-} ]]; then
  read -ra tests <<<"$UPAGER_ARM64_TESTS"
else
  mapfile -t tests < <(find "$build/test" -maxdepth 1 -name 'test_*' -type f -perm -u+x -printf '%f\n' | sort)
fi
((${#tests[@]})) || die "no test executables in $build/test"
for t in "${tests[@]}"; do
  [[ -x $build/test/$t ]] || die "no test executable $build/test/$t"
  cp "$build/test/$t" "$root/tests/"
done
cp "$build/tools/upager" "$root/bin/upager"

# Shared libraries: the DT_NEEDED closure, found where the cross build linked
# them (the binaries carry no RPATH into the sysroot). libgcc_s is dlopen()ed by
# glibc for pthread_cancel and unwinding, so it goes in as well.
libdirs=("$build" "$sysroot/usr/lib/aarch64-linux-gnu" "$sysroot/lib/aarch64-linux-gnu" /usr/aarch64-linux-gnu/lib)
declare -A have=()
add_libs() {
  local f n d
  for f; do
    while read -r n; do
      [[ -z ${have[$n]:-} ]] || continue
      have[$n]=1
      for d in "${libdirs[@]}" ""; do [[ -z $d || -e $d/$n ]] && break; done
      [[ -n $d ]] || die "$n (needed by $f) not found in ${libdirs[*]}"
      cp -L "$d/$n" "$root/lib/aarch64-linux-gnu/$n"
      add_libs "$d/$n"
    done < <(aarch64-linux-gnu-readelf -d "$f" | sed -n 's/.*(NEEDED).*\[\(.*\)\]$/\1/p')
  done
}
add_libs "$root"/tests/* "$root/bin/upager"
cp -L /usr/aarch64-linux-gnu/lib/libgcc_s.so.1 "$root/lib/aarch64-linux-gnu/"
[[ -f $root/lib/aarch64-linux-gnu/ld-linux-aarch64.so.1 ]] ||
  cp -L /usr/aarch64-linux-gnu/lib/ld-linux-aarch64.so.1 "$root/lib/aarch64-linux-gnu/"
ln -s aarch64-linux-gnu/ld-linux-aarch64.so.1 "$root/lib/ld-linux-aarch64.so.1"

# What the guest's init reads: the tests, limits, and the caller's UPAGER_*
# knobs (UPAGER_LOG, UPAGER_TEST_SCALE, ...), minus this lane's own.
{
  printf 'TESTS=%q\n' "${tests[*]}"
  printf 'TEST_TIMEOUT=%q\n' "$test_timeout"
  printf 'CRITERION_ARGS=%q\n' "$criterion_args"
  while IFS='=' read -r k _; do
    case $k in UPAGER_ARM64_* | UPAGER_CROSS_* | UPAGER_SYSROOT | UPAGER_DEB_CACHE) continue ;; esac
    printf 'export %s=%q\n' "$k" "${!k}"
  done < <(env | grep '^UPAGER_[A-Za-z0-9_]*=' || true)
} >"$root/lane.env"

initrd=$lane/initrd.cpio
# Uncompressed: decompressing under emulation costs more than the bytes do.
(cd "$root" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc -R 0:0 --quiet) >"$initrd"

# A fresh, sparse disk. Inode tables and journal are written here, not by the
# guest's ext4lazyinit thread, which would compete with the tests for the CPU.
disk=$lane/disk.img
rm -f "$disk"
truncate -s 4G "$disk"
mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 -L upager-lane "$disk"

say "booting $(basename "$kernel") with ${#tests[@]} test executables" \
  "($(du -m "$initrd" | cut -f1) MiB initramfs), guest timeout ${guest_timeout}s"
console=$lane/console.log
t_boot=$SECONDS
# cortex-a72 rather than max: max's pointer authentication is slow to emulate.
# -no-reboot with panic=-1: a guest that dies exits qemu instead of rebooting.
# stdin from /dev/null keeps qemu off the terminal (and CI has no stdin).
rc=0
timeout -k 10 "$guest_timeout" qemu-system-aarch64 \
  -M virt -cpu cortex-a72 -smp "$smp" -m "$mem" -accel tcg,thread=multi \
  -nographic -no-reboot -nic none \
  -kernel "$kernel" -initrd "$initrd" -append "console=ttyAMA0 panic=-1 quiet" \
  -drive "file=$disk,if=none,format=raw,id=d0,cache=unsafe" -device virtio-blk-device,drive=d0 \
  </dev/null | tr -d '\r' | tee "$console" || rc=${PIPESTATUS[0]}
t_end=$SECONDS

verdict=$(grep -a '^ARM64-LANE: ' "$console" | tail -n1 || true)
say "times: setup+cross build $((t_build - t_start))s, initramfs $((t_boot - t_build))s," \
  "guest $((t_end - t_boot))s, total $((t_end - t_start))s"
if ((rc == 124 || rc == 137)); then
  die "FAILED: guest still running after ${guest_timeout}s (console: $console)"
fi
[[ -n $verdict ]] || die "FAILED: the guest printed no verdict (qemu exit $rc; console: $console)"
((rc == 0)) || die "FAILED: qemu exited with $rc"
echo "${verdict#ARM64-}"
[[ $verdict =~ \ 0\ failed ]] || exit 1
