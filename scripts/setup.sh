#!/usr/bin/env bash
# Installs what Capsule needs on a fresh Debian 12 machine and builds it. Idempotent, and quick
# when nothing is missing: package checks are one dpkg-query, the build runs only when the build
# inputs changed since the last build.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
config="${CAPSULE_CONFIG:-Release}"
rid="$("$root/scripts/rid.sh")"

if [ "$(id -u)" -ne 0 ]; then
  echo "capsule: run as root (namespaces, TUN and nftables need it), e.g. sudo $0" >&2
  exit 1
fi

# Runtime tools, then the ones the tests, demo and benchmarks drive (unmodified programs).
# nginx, postgres and sshd: services that switch users, run in capsules of their own root (`create --rootfs`).
# busybox-static and umoci: an OCI image made and unpacked with Debian's own tool, a capsule's root (`--rootfs DIR`).
# clang and zlib1g-dev: the native (AOT) compiler links the `capsule` binary with them.
# etcd-server and etcd-client: the directory on etcd (`lab up --directory etcd`, docs/deploy.md).
# gcc: the capsule launcher (native/capsule-launch.c).
packages=(iproute2 nftables util-linux procps hostname kmod clang gcc zlib1g-dev etcd-server etcd-client
          iperf3 curl tcpdump iputils-ping python3 redis-server redis-tools openjdk-17-jre-headless
          nginx-light postgresql-15 postgresql-client-15 openssh-server openssh-client busybox-static umoci)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "capsule: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

if ! command -v dotnet >/dev/null 2>&1; then
  echo "capsule: the .NET 10 SDK (dotnet) is required and not on PATH" >&2
  exit 1
fi

# CRIU 4.2.1 in a private folder (the system criu does not work on this kernel; see DESIGN.md).
"$root/scripts/install-criu.sh" >&2

# The launcher that gives a capsule its own user and mount namespaces (`create --rootfs`): a small C
# program, because .NET cannot run code between fork and exec. Built again when its source changes.
launcher=/opt/capsule/bin/capsule-launch
if [ ! -x "$launcher" ] || [ "$root/native/capsule-launch.c" -nt "$launcher" ]; then
  echo "capsule: building $launcher" >&2
  mkdir -p "$(dirname "$launcher")"
  gcc -O2 -Wall -Wextra -Werror -o "$launcher.tmp" "$root/native/capsule-launch.c"
  mv "$launcher.tmp" "$launcher"
fi

# Post-copy migration (CRIU's lazy pages) needs pipes bigger than the default 1 MiB: root on this
# machine kind lacks CAP_SYS_RESOURCE, so CRIU cannot go past fs.pipe-max-size (docs/deploy.md).
# Set for this boot; a host that runs agents keeps it in /etc/sysctl.d (docs/deploy.md says how).
pipe_max=268435456
if [ "$(cat /proc/sys/fs/pipe-max-size)" -lt "$pipe_max" ]; then
  echo "capsule: setting fs.pipe-max-size=$pipe_max (post-copy migration needs it)" >&2
  sysctl -q -w fs.pipe-max-size="$pipe_max" >&2
fi

# The stamp holds a fingerprint of every build input: path, size and mtime of each file, sorted.
# Comparing fingerprints (rather than asking find for files newer than the stamp) also notices a
# source file that was deleted, moved or restored with an old mtime.
stamp="$root/artifacts/.built-$config"
inputs=(src tests bench Directory.Build.props Capsule.slnx)
fingerprint="$(cd "$root" && { find "${inputs[@]}" \( -name bin -o -name obj \) -prune -o -type f \
  -printf '%p %s %T@\n' 2>/dev/null || true; } | LC_ALL=C sort | sha256sum)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$fingerprint" ]; then
  echo "capsule: building ($config)" >&2
  mkdir -p "$root/artifacts"
  rm -f "$stamp" # a failed build must not leave the old fingerprint looking current
  dotnet build "$root/Capsule.slnx" -c "$config" -nologo -clp:ErrorsOnly -v:q >&2
  # The `capsule` people and the lab tests run: compiled ahead of time to native code, so a command
  # answers in tens of milliseconds instead of spending hundreds in the JIT (`capsule bench cli`).
  # The build above stays for the tests' own assemblies; they start this binary, not that one.
  echo "capsule: publishing the native capsule binary ($config, $rid)" >&2
  dotnet publish "$root/src/Capsule/Capsule.csproj" -c "$config" -r "$rid" -p:PublishAot=true \
    -nologo -clp:ErrorsOnly -v:q >&2
  echo "$fingerprint" > "$stamp"
fi
