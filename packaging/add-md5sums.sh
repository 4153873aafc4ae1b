#!/bin/sh
# Add DEBIAN/md5sums to a .deb built by cargo-deb, which (3.x) writes none:
# dpkg would compute them at unpack time, but debsums and lintian expect the
# shipped ones, and they let `dpkg --verify` compare with what was built.
set -eu
deb="$1"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
dpkg-deb -R "$deb" "$work/root"
(cd "$work/root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' |
  LC_ALL=C sort -z | xargs -0r md5sum) > "$work/root/DEBIAN/md5sums"
chmod 0644 "$work/root/DEBIAN/md5sums"
dpkg-deb --root-owner-group -Zxz --build "$work/root" "$deb" >/dev/null
