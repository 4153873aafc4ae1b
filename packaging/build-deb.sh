#!/usr/bin/env bash
# Build target/debian/groupd_<version>_<arch>.deb from a release build.
set -euo pipefail
cd "$(dirname "$0")/.."
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
arch=$(dpkg --print-architecture)
cargo build --release --bins
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
install -D -m 0755 target/release/groupd "$root/usr/bin/groupd"
install -D -m 0755 target/release/groupctl "$root/usr/bin/groupctl"
install -D -m 0644 systemd/groupd.service "$root/lib/systemd/system/groupd.service"
install -D -m 0644 policies/groupd.toml "$root/etc/groupd/groupd.toml"
install -D -m 0644 policies/base.toml "$root/etc/groupd/policies/base.toml"
install -d "$root/usr/share/doc/groupd/examples"
install -m 0644 policies/examples/*.toml "$root/usr/share/doc/groupd/examples/"
install -m 0644 README.md "$root/usr/share/doc/groupd/README.md"
install -d "$root/DEBIAN"
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" packaging/debian/control > "$root/DEBIAN/control"
install -m 0644 packaging/debian/conffiles "$root/DEBIAN/conffiles"
for s in postinst prerm postrm; do install -m 0755 "packaging/debian/$s" "$root/DEBIAN/$s"; done
mkdir -p target/debian
out="target/debian/groupd_${version}_${arch}.deb"
dpkg-deb --root-owner-group --build "$root" "$out" >/dev/null
echo "$out"
