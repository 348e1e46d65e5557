#!/usr/bin/env bash
# Builds, without any image registry, the three base images the Dockerfiles start FROM, under the
# names of the official images so that the Dockerfiles build unchanged where a registry exists:
#   debian:bookworm-slim        Debian 12 minbase made by debootstrap from deb.debian.org
#   python:3.11-slim-bookworm   that rootfs + Debian's python3 (3.11), venv and pip; python/pip on
#                               PATH as in the official image
#   rust:1.95-slim-bookworm     that rootfs + gcc/libc6-dev + the host's rustup toolchain 1.95
#                               (copied from ~/.rustup, which is how this machine's Rust was
#                               installed; Debian 12's rustc 1.63 cannot build edition 2024)
# Trust anchors: the extra CA certificates this host trusts (EXTRA_CA_DIR, default
# /usr/local/share/ca-certificates/*.crt) are copied into the Debian rootfs, where Debian's
# ca-certificates package (installed by the images that need TLS) adds them to the system bundle.
# On the project's machines the registries are reached through a TLS-inspecting egress proxy
# whose CA is one of them; without it, cargo and pip in a build container fail with "self-signed
# certificate in certificate chain". The official images have no such anchors: images built on
# these bases are for this machine's tests, never pushed.
# An image that already exists is left alone (idempotent); `--force` rebuilds all three.
# Needs root (debootstrap, chroot). Usage: docker/base-images.sh [--force]
set -euo pipefail

MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
SUITE=bookworm
DEBIAN_IMAGE=debian:bookworm-slim
PYTHON_IMAGE=python:3.11-slim-bookworm
RUST_VERSION=${RUST_VERSION:-1.95.0}
RUST_IMAGE=rust:${RUST_VERSION%.*}-slim-bookworm
FORCE=0
[ "${1:-}" = "--force" ] && FORCE=1

die() { echo "error: $*" >&2; exit 1; }
have_image() { [ "$FORCE" = 0 ] && docker image inspect "$1" >/dev/null 2>&1; }
log() { echo "== base-images: $*"; }

command -v docker >/dev/null || die "docker not found"
[ "$(id -u)" = 0 ] || die "run as root (debootstrap and chroot need it)"
if have_image "$DEBIAN_IMAGE" && have_image "$PYTHON_IMAGE" && have_image "$RUST_IMAGE"; then
    log "$DEBIAN_IMAGE, $PYTHON_IMAGE, $RUST_IMAGE already exist"
    exit 0
fi
if ! command -v debootstrap >/dev/null; then
    log "installing debootstrap with apt-get"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi

WORK=$(mktemp -d /var/tmp/covidct-base.XXXXXX)
MOUNTED=()
cleanup() {
    local m
    for m in "${MOUNTED[@]}"; do umount -l "$m" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

# Runs a command inside a rootfs with /proc and /dev/pts mounted (apt and dpkg need them).
in_root() {
    local root=$1; shift
    mount -t proc proc "$root/proc" && MOUNTED+=("$root/proc")
    mount --bind /dev/pts "$root/dev/pts" && MOUNTED+=("$root/dev/pts")
    cp /etc/resolv.conf "$root/etc/resolv.conf"
    DEBIAN_FRONTEND=noninteractive LC_ALL=C chroot "$root" "$@"
    umount "$root/dev/pts" "$root/proc"
    MOUNTED=()
    : > "$root/etc/resolv.conf"
}

# apt inside the rootfs, then what the official slim images remove: lists, caches, docs.
apt_install() {
    local root=$1; shift
    in_root "$root" sh -c "apt-get update -qq && apt-get install -y -qq --no-install-recommends $* >/dev/null"
    slim "$root"
}
slim() {
    local root=$1
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
        "$root"/var/log/apt/* "$root"/var/log/dpkg.log "$root"/tmp/* "$root"/root/.cache
    find "$root/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete 2>/dev/null || true
    rm -rf "$root"/usr/share/man/* "$root"/usr/share/info/*
}

import_rootfs() {
    local root=$1 name=$2; shift 2
    local changes=() c
    for c in "$@"; do changes+=(--change "$c"); done
    tar --numeric-owner -C "$root" -c . | docker import "${changes[@]}" \
        --message "covidct docker/base-images.sh: $name from $MIRROR" - "$name" >/dev/null
    log "imported $name ($(docker image inspect --format '{{.Size}}' "$name" | awk '{printf "%.0f MB", $1/1e6}'))"
}

START=$SECONDS
BASE=$WORK/debian
log "debootstrap --variant=minbase $SUITE from $MIRROR"
debootstrap --variant=minbase "$SUITE" "$BASE" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 \
    || { tail -20 "$WORK/debootstrap.log" >&2; die "debootstrap failed (log above)"; }
# The sources of the official image: main, updates and security, deb822 format.
rm -f "$BASE/etc/apt/sources.list"
cat > "$BASE/etc/apt/sources.list.d/debian.sources" <<SOURCES
Types: deb
URIs: $MIRROR
Suites: $SUITE $SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $SECURITY_MIRROR
Suites: $SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
# As the official image: no recommends, no docs or translations kept by later installs.
cat > "$BASE/etc/apt/apt.conf.d/docker-clean" <<'APT'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache ""; Dir::Cache::srcpkgcache "";
APT
EXTRA_CA_DIR=${EXTRA_CA_DIR:-/usr/local/share/ca-certificates}
mkdir -p "$BASE/usr/local/share/ca-certificates"
for ca in "$EXTRA_CA_DIR"/*.crt; do
    [ -f "$ca" ] || continue
    cp "$ca" "$BASE/usr/local/share/ca-certificates/"
    log "trust anchor $(basename "$ca") from $EXTRA_CA_DIR"
done
echo 'APT::Install-Recommends "false";' > "$BASE/etc/apt/apt.conf.d/docker-no-recommends"
cat > "$BASE/etc/dpkg/dpkg.cfg.d/docker-excludes" <<'DPKG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
DPKG
in_root "$BASE" sh -c 'apt-get update -qq && apt-get upgrade -y -qq >/dev/null'
slim "$BASE"
PATH_ENV='PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
log "debian rootfs ready after $((SECONDS - START)) s"

if ! have_image "$DEBIAN_IMAGE"; then
    import_rootfs "$BASE" "$DEBIAN_IMAGE" "ENV $PATH_ENV" 'CMD ["bash"]'
fi

if ! have_image "$PYTHON_IMAGE"; then
    PY=$WORK/python
    cp -a "$BASE" "$PY"
    apt_install "$PY" python3 python3-venv python3-pip ca-certificates netbase tzdata
    # The official image's pip installs system-wide; Debian marks its python externally managed.
    rm -f "$PY"/usr/lib/python3.*/EXTERNALLY-MANAGED
    for tool in python:python3 python3:python3 pip:pip3 pip3:pip3; do
        ln -sf "/usr/bin/${tool#*:}" "$PY/usr/local/bin/${tool%%:*}"
    done
    version=$(chroot "$PY" python3 -c 'import platform; print(platform.python_version())')
    import_rootfs "$PY" "$PYTHON_IMAGE" "ENV $PATH_ENV" 'ENV LANG=C.UTF-8' "ENV PYTHON_VERSION=$version" \
        'CMD ["python3"]'
    rm -rf "$PY"
fi

if ! have_image "$RUST_IMAGE"; then
    RUSTUP_SRC=${RUSTUP_HOME:-$HOME/.rustup}
    CARGO_SRC=${CARGO_HOME:-$HOME/.cargo}
    TOOLCHAIN=$RUST_VERSION-x86_64-unknown-linux-gnu
    src=$(readlink -f "$RUSTUP_SRC/toolchains/$TOOLCHAIN") \
        || die "no toolchain $TOOLCHAIN under $RUSTUP_SRC (rustup toolchain install $RUST_VERSION)"
    [ -x "$src/bin/rustc" ] || die "$src/bin/rustc missing"
    got=$("$src/bin/rustc" --version | awk '{print $2}')
    [ "$got" = "$RUST_VERSION" ] || die "$src is rustc $got, not $RUST_VERSION"
    [ -x "$CARGO_SRC/bin/rustup" ] || die "$CARGO_SRC/bin/rustup missing"
    RS=$WORK/rust
    cp -a "$BASE" "$RS"
    apt_install "$RS" ca-certificates gcc libc6-dev
    # The official image's layout: RUSTUP_HOME=/usr/local/rustup, CARGO_HOME=/usr/local/cargo,
    # rustup's proxies in /usr/local/cargo/bin. Documentation (share/doc) is left out.
    mkdir -p "$RS/usr/local/rustup/toolchains/$TOOLCHAIN" "$RS/usr/local/cargo/bin"
    tar -C "$src" --exclude=./share/doc -c . | tar -C "$RS/usr/local/rustup/toolchains/$TOOLCHAIN" -x
    printf 'version = "12"\ndefault_toolchain = "%s"\nprofile = "minimal"\nauto_self_update = "disable"\n' \
        "$TOOLCHAIN" > "$RS/usr/local/rustup/settings.toml"
    install -m 0755 "$CARGO_SRC/bin/rustup" "$RS/usr/local/cargo/bin/rustup"
    for proxy in cargo cargo-clippy cargo-fmt clippy-driver rustc rustdoc rustfmt; do
        ln -s rustup "$RS/usr/local/cargo/bin/$proxy"
    done
    chmod -R a+w "$RS/usr/local/rustup" "$RS/usr/local/cargo"
    RUST_ENV=(RUSTUP_HOME=/usr/local/rustup CARGO_HOME=/usr/local/cargo
        PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
        RUST_VERSION="$RUST_VERSION")
    changes=()
    for e in "${RUST_ENV[@]}"; do changes+=("ENV $e"); done
    import_rootfs "$RS" "$RUST_IMAGE" "${changes[@]}" 'CMD ["bash"]'
    rm -rf "$RS"
    check=$(docker run --rm "$RUST_IMAGE" sh -c 'cargo --version && rustc --version') \
        || { docker rmi "$RUST_IMAGE" >/dev/null; die "cargo does not run in $RUST_IMAGE"; }
    log "$RUST_IMAGE: $(echo "$check" | tr '\n' ' ')"
fi
log "done in $((SECONDS - START)) s"
