#!/usr/bin/env bash
# Installs CRIU 4.2+ privately, for Capsule's checkpoint/restore, without touching the system's apt
# setup or libc. Debian 12's criu 3.17 fails on current kernels and Debian 13's 4.1.1 cannot dump TCP
# sockets; Debian sid has 4.2.x. So: a private apt configuration (own sources list, lists, cache and
# an empty dpkg status) fetches criu and the libraries it needs, including sid's libc, from the
# machine's own Debian mirror; `dpkg -x` unpacks them into a private tree, and a wrapper runs criu
# through that tree's dynamic loader with --library-path, so nothing else on the machine sees them
# and no later upgrade of the machine pulls anything from sid.
#
#   Install dir: $CAPSULE_CRIU_DIR, default /opt/capsule/criu; wrapper: <dir>/bin/criu.
#   Idempotent: when <dir>/bin/criu --version reports 4.2 or newer it exits 0 at once, silently.
#   Otherwise it builds the tree in a temporary folder beside <dir>, checks it (criu --version,
#   criu check) and only then renames it into place, so a failure leaves no half-installed tree.
#   Progress and errors go to stderr; the final one-line summary goes to stdout.
set -euo pipefail
umask 022

dir="${CAPSULE_CRIU_DIR:-/opt/capsule/criu}"
case "$dir" in /*) ;; *) dir="$PWD/$dir" ;; esac
while [ "${#dir}" -gt 1 ] && [ "${dir%/}" != "$dir" ]; do dir="${dir%/}"; done
wrapper="$dir/bin/criu"
marker=".capsule-criu"   # marks a tree this script made, so only such a tree is ever replaced

# Packages from sid: criu and every shared library in its dependency tree (known good set). The
# dependency closure that sid reports for criu today is added to these, so a new dependency is
# picked up too.
wanted=(criu libcompel1 libc6 libbsd0 libmd0 libgnutls30t64 libp11-kit0 libffi8 libidn2-0
        libunistring5 libtasn1-6 libnettle8t64 libhogweed6t64 libgmp10 libnet9 libnftables1
        libjansson4 libxtables12 libmnl0 libnftnl11 libedit2 libnl-3-200 libprotobuf-c1 libuuid1
        libzstd1 libgcc-s1 libbrotli1 zlib1g libtinfo6 libbpf1 libelf1t64 libcap2)

say() { echo "capsule: criu: $*" >&2; }
die() { echo "capsule: criu: error: $*" >&2; exit 1; }

# Prints the version that a criu executable reports ("4.2.1"), or nothing.
criu_version() {
  "$1" --version 2>/dev/null | awk '/^Version:/ && v == "" { v = $2 } END { print v }' || true
}
# True when version $1 is 4.2 or newer.
version_ok() {
  local v="$1" maj min
  maj="${v%%.*}"; min="${v#*.}"; min="${min%%.*}"
  [[ "$maj" =~ ^[0-9]+$ && "$min" =~ ^[0-9]+$ ]] || return 1
  (( maj > 4 || (maj == 4 && min >= 2) ))
}
installed_ok() { [ -x "$wrapper" ] && version_ok "$(criu_version "$wrapper")"; }

# Quick path: already installed.
if installed_ok; then exit 0; fi

started=$SECONDS
[ "$(id -u)" -eq 0 ] || die "run as root (criu needs it, and the install goes to $dir), e.g. sudo $0"
for tool in apt-get apt-cache apt-config dpkg dpkg-deb flock readlink awk; do
  command -v "$tool" >/dev/null 2>&1 || die "'$tool' is required and not on PATH"
done
arch="$(dpkg --print-architecture)"
[ "$arch" = amd64 ] || die "only amd64 is supported (this machine is $arch)"
triplet=x86_64-linux-gnu

parent="$(dirname "$dir")"
mkdir -p "$parent" || die "cannot create $parent"
# One install at a time; whoever waited re-checks, since the other may have just installed it.
exec 9>"$parent/.capsule-criu-install.lock"
flock 9
if installed_ok; then exit 0; fi
if [ -e "$dir" ] && [ ! -e "$dir/$marker" ] && [ -n "$(ls -A "$dir" 2>/dev/null)" ]; then
  die "$dir exists and was not made by this script; remove it or set CAPSULE_CRIU_DIR elsewhere"
fi

# Work folder beside the install dir, so the final rename stays on one file system. apt drops to
# the _apt user to download, so the folders it writes must be reachable by that user.
work="$(mktemp -d "$parent/.capsule-criu-install.XXXXXX")"
cleanup() { rm -rf "$work"; }
trap cleanup EXIT
trap 'exit 130' INT TERM
chmod 755 "$work"
log="$work/log"
: >"$log"
# Runs a command with its output to the log; on failure shows the log's tail and returns non-zero.
logged() {
  echo "+ $*" >>"$log"
  if "$@" >>"$log" 2>&1; then return 0; fi
  echo "---- last lines of output ($*):" >&2
  tail -n 25 "$log" >&2
  return 1
}

# ---- The machine's Debian mirror, read from its apt sources (never named here). -----------------
# Prints "URI|KEYRING|SUITES" for each enabled "deb" entry of one-line and deb822 files.
list_sources() {
  local SL="" SP="" f
  eval "$(apt-config shell SL Dir::Etc::sourcelist/f SP Dir::Etc::sourceparts/d)"
  for f in "${SL:-/etc/apt/sources.list}" "${SP:-/etc/apt/sources.list.d/}"*.list; do
    [ -f "$f" ] && [ -r "$f" ] || continue
    awk '{
      sub(/#.*/, ""); if ($1 != "deb") next
      i = 2; kr = ""
      if ($2 ~ /^\[/) {
        opts = ""
        while (i <= NF) { opts = opts " " $i; if ($i ~ /\]$/) { i++; break }; i++ }
        if (match(opts, /signed-by=[^] ]+/)) kr = substr(opts, RSTART + 10, RLENGTH - 10)
      }
      if (i + 1 <= NF) print $i "|" kr "|" $(i + 1)
    }' "$f"
  done
  for f in "${SP:-/etc/apt/sources.list.d/}"*.sources; do
    [ -f "$f" ] && [ -r "$f" ] || continue
    awk '
      function flush(  n, k, u) {
        if (types ~ /(^|[ \t])deb([ \t]|$)/ && tolower(enabled) != "no" && uris != "") {
          n = split(uris, u, /[ \t]+/)
          for (k = 1; k <= n; k++) if (u[k] != "") print u[k] "|" kr "|" suites
        }
        types = uris = suites = kr = enabled = last = ""
      }
      /^#/ { next }
      /^[ \t]*$/ { flush(); next }
      /^[ \t]/ {
        if (last == "uris") uris = uris " " $0
        else if (last == "suites") suites = suites " " $0
        else if (last == "signed-by") kr = ""   # an inline key: fall back to the default keyring
        next
      }
      {
        key = tolower($0); sub(/:.*/, "", key)
        val = $0; sub(/^[^:]*:[ \t]*/, "", val); sub(/[ \t]+$/, "", val); last = key
        if (key == "types") types = val
        else if (key == "uris") uris = val
        else if (key == "suites") suites = val
        else if (key == "signed-by") { kr = val; sub(/[ \t].*/, "", kr); if (kr !~ /^\//) kr = "" }
        else if (key == "enabled") enabled = val
      }
      END { flush() }' "$f"
  done
}

codename=""
if [ -r /etc/os-release ]; then codename="$(. /etc/os-release && echo "${VERSION_CODENAME:-}")"; fi
primary=() fallback=()
while IFS='|' read -r uri kr suites; do
  case "$uri" in cdrom:*|"") continue ;; esac
  uri="${uri%/}"
  is_primary=0 is_security=1
  for s in $suites; do
    [ -n "$codename" ] && [ "$s" = "$codename" ] && is_primary=1
    case "$s" in *-security|*/updates) ;; *) is_security=0 ;; esac
  done
  case "$uri" in *debian-security*) is_security=1 ;; esac
  if [ "$is_primary" = 1 ]; then primary+=("$uri|$kr")
  elif [ "$is_security" = 0 ]; then fallback+=("$uri|$kr")
  fi
done < <(list_sources)
candidates=()
for c in "${primary[@]}" "${fallback[@]}"; do
  dup=0
  for d in "${candidates[@]}"; do [ "${d%%|*}" = "${c%%|*}" ] && dup=1; done
  [ "$dup" = 1 ] || candidates+=("$c")
done
[ "${#candidates[@]}" -gt 0 ] ||
  die "no Debian mirror found in the machine's apt sources (/etc/apt/sources.list, /etc/apt/sources.list.d/)"

# ---- Private apt configuration: nothing of it is seen by the machine's own apt. -----------------
a="$work/apt"
mkdir -p "$a/etc/sources.list.d" "$a/etc/preferences.d" "$a/etc/apt.conf.d" \
         "$a/lists/partial" "$a/cache/archives/partial"
: >"$a/status"
: >"$a/etc/apt.conf.main"
# APT_CONFIG is read before the machine's apt.conf.d, so pointing Dir::Etc::parts at an empty
# folder here keeps the machine's hooks (appstream, packagekit, docker-clean) and extra index
# targets out of this private run. Its Acquire settings (how to reach the mirror: proxies,
# timeouts, whether a frozen mirror's Release dates are checked) are carried over.
{
  echo "Dir::Etc::parts \"$a/etc/apt.conf.d\";"
  echo "Dir::Etc::main \"$a/etc/apt.conf.main\";"
  apt-config dump 2>/dev/null | grep -E '^Acquire::' |
    grep -vE '^Acquire::(IndexTargets|CompressionTypes|Languages|Changelogs|cdrom)([: ]|$)' || true
} >"$a/apt.conf"
export APT_CONFIG="$a/apt.conf"
apt_opts=(
  -o "Dir::Etc::sourcelist=$a/etc/sources.list"
  -o "Dir::Etc::sourceparts=$a/etc/sources.list.d"
  -o "Dir::Etc::preferences=$a/etc/preferences"
  -o "Dir::Etc::preferencesparts=$a/etc/preferences.d"
  -o "Dir::State::Lists=$a/lists"
  -o "Dir::State::status=$a/status"
  -o "Dir::State::extended_states=$a/extended_states"
  -o "Dir::Cache=$a/cache"
  -o "Dir::Cache::Archives=$a/cache/archives"
  -o "APT::Architecture=$arch"
  -o "APT::Architectures::=$arch"
  -o "Acquire::Languages=none"
  -o "Acquire::Retries=2"
)
papt() { apt-get -q "${apt_opts[@]}" "$@"; }
pcache() { apt-cache "${apt_opts[@]}" "$@"; }
# Prints the sid candidate version of package $1, or nothing.
candidate() {
  { pcache show --no-all-versions "$1" 2>/dev/null || true; } | awk '/^Version:/ && v == "" { v = $2 } END { print v }'
}

mirror="" sid_criu=""
for c in "${candidates[@]}"; do
  uri="${c%%|*}" kr="${c#*|}"
  if [ -z "$kr" ] || [ ! -r "$kr" ]; then
    kr=""
    [ -r /usr/share/keyrings/debian-archive-keyring.gpg ] && kr=/usr/share/keyrings/debian-archive-keyring.gpg
  fi
  echo "deb ${kr:+[signed-by=$kr] }$uri sid main" >"$a/etc/sources.list"
  say "reading the sid suite from the machine's mirror $uri"
  rm -rf "$a/lists" && mkdir -p "$a/lists/partial"
  # apt-get update only warns when a mirror cannot be reached: look for the index it should fetch.
  if ! logged papt --error-on=any update; then
    say "the sid suite is not reachable at $uri"
    continue
  fi
  if ! compgen -G "$a/lists/*_dists_sid_main_binary-${arch}_Packages*" >/dev/null; then
    grep -E '^(W|E):' "$log" | tail -n 5 >&2 || true
    say "the sid suite is not reachable at $uri (no package index came)"
    continue
  fi
  v="$(candidate criu)"
  if [ -z "$v" ]; then say "$uri has no criu in sid"; continue; fi
  upstream="${v#*:}"; upstream="${upstream%%-*}"; upstream="${upstream%%+*}"
  if ! version_ok "$upstream"; then say "$uri has criu $v in sid, older than 4.2"; continue; fi
  mirror="$uri" sid_criu="$v"
  break
done
[ -n "$mirror" ] ||
  die "could not get criu 4.2+ from the sid suite of the machine's mirror(s): ${candidates[*]%%|*}"

# ---- Resolve package names against sid (names may change, e.g. a t64 rename). -------------------
# One list of sid's real package names: each apt-cache call costs a fraction of a second here.
pcache pkgnames 2>/dev/null | sort -u >"$a/names" || true
in_sid() { grep -qxF -- "$1" "$a/names"; }
resolve() {   # prints the real sid package for name $1, or nothing
  local p="$1" alt prov
  in_sid "$p" && { echo "$p"; return; }
  for alt in "${p}t64" "${p%t64}"; do
    [ "$alt" != "$p" ] && in_sid "$alt" && { echo "$alt"; return; }
  done
  # A virtual name: take the first real package that provides it.
  prov="$(pcache showpkg "$p" 2>/dev/null |
          awk '/^Reverse Provides:/ { on = 1; next } on && NF && p == "" { p = $1 } END { print p }' || true)"
  if [ -n "$prov" ] && in_sid "$prov"; then echo "$prov"; fi
}
pkgs=() missing=()
add_pkg() { local q; for q in "${pkgs[@]}"; do [ "$q" = "$1" ] && return; done; pkgs+=("$1"); }
for p in "${wanted[@]}"; do
  r="$(resolve "$p")"
  if [ -z "$r" ]; then missing+=("$p")
  else
    [ "$r" = "$p" ] || say "note: $p is $r in sid now"
    add_pkg "$r"
  fi
done
[ "${#missing[@]}" -eq 0 ] || die "not in sid at $mirror: ${missing[*]}"
# Anything else sid's criu depends on today (gcc-N-base holds only docs; the extra gconv modules
# only add character sets).
while read -r p; do
  case "$p" in ""|\<*|*-base|libc-gconv-modules-extra) continue ;; esac
  in_sid "$p" || continue
  before="${#pkgs[@]}"; add_pkg "$p"
  [ "${#pkgs[@]}" = "$before" ] || say "note: also fetching $p (a dependency of criu in sid)"
done < <(pcache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks \
           --no-replaces --no-enhances criu 2>/dev/null | grep -v '^ ' | sort -u)

# ---- Download and unpack. -----------------------------------------------------------------------
debs="$work/debs"
mkdir -p "$debs"
id _apt >/dev/null 2>&1 && chown _apt "$debs"
say "downloading ${#pkgs[@]} packages (criu $sid_criu) from sid"
(cd "$debs" && logged papt download "${pkgs[@]}") ||
  die "downloading the packages from sid at $mirror failed (see above)"
stage="$work/stage"
root="$stage/root"
mkdir -p "$root" "$stage/bin"
: >"$stage/PACKAGES"
bytes=0
for p in "${pkgs[@]}"; do
  deb=""
  for f in "$debs/${p}_"*.deb; do [ -f "$f" ] && deb="$f"; done
  [ -n "$deb" ] || die "package $p was not downloaded from sid at $mirror"
  logged dpkg-deb --info "$deb" || die "$deb is not a valid package"
  logged dpkg -x "$deb" "$root" || die "cannot unpack $deb"
  printf '%s %s\n' "$(dpkg-deb -f "$deb" Package)" "$(dpkg-deb -f "$deb" Version)" >>"$stage/PACKAGES"
  bytes=$(( bytes + $(stat -c %s "$deb") ))
done
echo "$mirror sid" >"$stage/SOURCE"

# ---- Find what the unpacked tree really holds. --------------------------------------------------
rel() { echo "${1#"$root"/}"; }
loader="" bin=""
for f in "$root/usr/lib/$triplet/ld-linux-x86-64.so.2" "$root/lib/$triplet/ld-linux-x86-64.so.2" \
         "$root/usr/lib64/ld-linux-x86-64.so.2" "$root/lib64/ld-linux-x86-64.so.2"; do
  [ -f "$f" ] && [ ! -L "$f" ] && { loader="$(rel "$f")"; break; }
done
[ -n "$loader" ] || loader="$(rel "$(find "$root" -type f -name 'ld-linux-x86-64.so.2' -print -quit)")"
[ -n "$loader" ] && [ -f "$root/$loader" ] || die "the unpacked libc6 has no ld-linux-x86-64.so.2"
for f in "$root/usr/sbin/criu" "$root/sbin/criu" "$root/usr/bin/criu"; do
  [ -f "$f" ] && [ ! -L "$f" ] && { bin="$(rel "$f")"; break; }
done
[ -n "$bin" ] || die "the unpacked criu package has no criu executable"
# Every folder holding shared libraries, the multiarch ones first.
libdirs=()
while read -r d; do libdirs+=("$(rel "$d")"); done < <(
  find "$root" \( -type f -o -type l \) \( -name 'lib*.so*' -o -name 'ld-linux*.so*' \) -printf '%h\n' |
    sort -u | awk -v t="$triplet" '{ print ($0 ~ "/" t "$" ? 0 : 1) "\t" $0 }' | sort -k1,1n -k2 | cut -f2-)
[ "${#libdirs[@]}" -gt 0 ] || die "the unpacked tree holds no shared libraries"
# A library symlink pointing at an absolute path would lead out of the private tree: make it relative.
while read -r l; do
  [ -n "$l" ] || continue
  t="$root$(readlink "$root/$l")"
  if [ -e "$t" ]; then ln -sfn "$(realpath -s --relative-to="$(dirname "$root/$l")" "$t")" "$root/$l"; fi
done < <(find "$root" -type l -lname '/*' \( -name 'lib*.so*' -o -name 'ld-linux*' \) -printf '%P\n')

libpath="" abs_libpath=""
for d in "${libdirs[@]}"; do
  libpath="${libpath:+$libpath:}\$r/$d"
  abs_libpath="${abs_libpath:+$abs_libpath:}$root/$d"
done
cat >"$stage/bin/criu" <<EOF
#!/bin/sh
# CRIU from Debian sid with its own libraries, made by Capsule's scripts/install-criu.sh. It runs
# through the private tree's loader with --library-path, so the machine's libc is left alone and
# programs that criu starts use the machine's libraries as usual.
self=\$(readlink -f -- "\$0") || exit 127
r=\${self%/*}; r=\${r%/*}/root
exec "\$r/$loader" --library-path "$libpath" "\$r/$bin" "\$@"
EOF
chmod 755 "$stage/bin/criu"
touch "$stage/$marker"

# ---- Check the staged tree before putting it in place. ------------------------------------------
unresolved="$("$root/$loader" --library-path "$abs_libpath" --list "$root/$bin" 2>&1 |
              grep -i 'not found' || true)"
[ -z "$unresolved" ] || die "libraries missing from the private tree:
$unresolved"
version="$(criu_version "$stage/bin/criu")"
[ -n "$version" ] || { "$stage/bin/criu" --version >&2 || true; die "the staged criu does not run"; }
version_ok "$version" || die "the staged criu reports version $version, not 4.2 or newer"
check_out="$("$stage/bin/criu" check 2>&1)" && check_rc=0 || check_rc=$?
if [ "$check_rc" -ne 0 ] || ! grep -q '^Looks good' <<<"$check_out"; then
  printf '%s\n' "$check_out" >&2
  die "'criu check' failed (exit $check_rc) with criu $version from sid; nothing was installed"
fi
check_line="$(grep '^Looks good' <<<"$check_out" | head -n1)"

# ---- Put it in place: move any old tree of ours aside, rename the new one in, drop the old one. --
if [ -e "$dir" ] || [ -L "$dir" ]; then
  mv -T "$dir" "$work/old" || die "cannot move the old $dir aside"
fi
if ! mv -T "$stage" "$dir"; then
  [ -e "$work/old" ] && mv -T "$work/old" "$dir"
  die "cannot move the new tree to $dir"
fi
final="$(criu_version "$wrapper")"
[ "$final" = "$version" ] || die "$wrapper does not run after the move (reports '$final')"

printf 'capsule: criu %s (sid %s, %d packages, %d.%d MB from %s) installed in %s in %d s; criu check: %s\n' \
  "$version" "$sid_criu" "${#pkgs[@]}" $((bytes / 1000000)) $((bytes % 1000000 / 100000)) "$mirror" \
  "$dir" $((SECONDS - started)) "$check_line"
