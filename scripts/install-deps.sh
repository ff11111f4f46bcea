#!/usr/bin/env bash
# Installs what the build and the tests need on a fresh Debian machine that
# already has Rust, Go, Python, gcc and make. Idempotent and quiet when
# everything is there.
set -euo pipefail

need_apt=()
command -v pkg-config >/dev/null || need_apt+=(pkg-config)
[ -f /usr/include/systemd/sd-daemon.h ] || need_apt+=(libsystemd-dev)
command -v valgrind >/dev/null || need_apt+=(valgrind)
# make deb (dpkg-buildpackage, dh); dpkg-dev comes with debhelper.
command -v dh >/dev/null || need_apt+=(debhelper)

if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  echo "installing Debian packages: ${need_apt[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
