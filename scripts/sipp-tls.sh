# Sourced by scripts/test.  Makes sure a SIPp built with TLS exists for the tests that run SIPp
# with `-t l1` (harness/sipp_runner.py finds it: `sipp` itself when `sipp -v` shows TLS, else the
# wrapper this writes).
#
# Why not bookworm's own: its sip-tester (3.6.1) is built without TLS (`sipp -v` prints
# 3.6.1-SCTP-PCAP-RTPSTREAM).  Rebuilding it from Debian's source package is not possible here:
# the machines this runs on reach Debian's binary packages only (`apt-get source` gets the .dsc
# and then 404 for the tarballs).  The one Debian-packaged SIPp with TLS is trixie's sip-tester
# (3.7.x, built against wolfSSL: `-TLS-` in `sipp -v`).  It is fetched by apt from the Debian
# archive (signatures checked against the installed debian-archive-keyring) through a private
# apt configuration, so the machine's own sources and installed packages are left as they are;
# the package and the libraries it runs on (its dependency closure, trixie's libc included) are
# unpacked into a cache directory outside the repository, and a wrapper runs it with that libc's
# dynamic loader.  As packaged it completes TLS handshakes but never sends a message (its
# wolfSSL build answers SSL_get_fd with -1): the wrapper preloads scripts/sipp-tls-fd.c, built
# here with the C compiler the tests need anyway, which fixes that one call.  A second run finds
# the cache (stamped with these two files' hashes) and fetches nothing.
#
# sipp_tls_dir: the cache directory (SIGNALING_CACHE overrides its parent).
# ensure_sipp_tls: nothing when a TLS-capable SIPp is there; else fetch it, or exit non-zero
# with a one-line reason.

SIPP_TLS_SUITE=trixie

sipp_tls_dir() {
  # As harness/sipp_runner.py's sipp_tls_dir (Path.home(): HOME, else the password entry).
  local home=${HOME:-$(getent passwd "$(id -u)" | cut -d: -f6)}
  echo "${SIGNALING_CACHE:-${XDG_CACHE_HOME:-$home/.cache}/signaling}/sipp-tls"
}

_sipp_has_tls() {
  # `sipp -v` exits 99 (no calls run): only its text counts.
  local v; v=$("$1" -v 2>&1 || true)
  case "$v" in *-TLS*) return 0;; *) return 1;; esac
}

_sipp_tls_fail() {
  echo "scripts/test: cannot provide a SIPp built with TLS: $*" >&2
  exit 1
}

_sipp_tls_stamp() {
  sha256sum scripts/sipp-tls.sh scripts/sipp-tls-fd.c | cut -d' ' -f1 | tr '\n' ' '
}

ensure_sipp_tls() {
  if command -v sipp >/dev/null && _sipp_has_tls sipp; then return 0; fi
  local dir; dir=$(sipp_tls_dir)
  if [ -x "$dir/sipp" ] && [ "$(cat "$dir/stamp" 2>/dev/null)" = "$(_sipp_tls_stamp)" ] \
       && _sipp_has_tls "$dir/sipp"; then return 0; fi
  echo "fetching Debian $SIPP_TLS_SUITE's sip-tester (built with TLS) into $dir"
  local work="$dir.tmp"
  rm -rf "$work" && mkdir -p "$work/apt/lists/partial" "$work/apt/cache/archives/partial" \
    "$work/debs" "$work/root" || _sipp_tls_fail "cannot create $work"
  local keyring=/usr/share/keyrings/debian-archive-keyring.gpg
  [ -f "$keyring" ] || _sipp_tls_fail "$keyring missing (install debian-archive-keyring)"
  echo "deb [signed-by=$keyring] http://deb.debian.org/debian $SIPP_TLS_SUITE main" \
    >"$work/apt/sources.list"
  # A private apt: its own source list, lists and cache, no preferences, and an empty dpkg
  # status so the dependency closure is complete (nothing is taken from the host).
  local apt=(-o "Dir::Etc::SourceList=$work/apt/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
             -o "Dir::Etc::Preferences=/dev/null" -o "Dir::Etc::PreferencesParts=/dev/null"
             -o "Dir::State::Lists=$work/apt/lists" -o "Dir::Cache=$work/apt/cache"
             -o "Dir::State::status=/dev/null" -o "APT::Sandbox::User=root" -q)
  apt-get "${apt[@]}" update >"$work/apt.log" 2>&1 \
    || _sipp_tls_fail "apt-get update for $SIPP_TLS_SUITE failed: $(tail -1 "$work/apt.log")"
  local pkgs
  pkgs=$(apt-cache "${apt[@]}" depends --recurse --no-recommends --no-suggests --no-conflicts \
           --no-breaks --no-replaces --no-enhances sip-tester 2>>"$work/apt.log" \
         | grep -v '^[ <]' | sort -u | tr '\n' ' ' || true)
  case " $pkgs " in *" sip-tester "*) ;; *) _sipp_tls_fail "no sip-tester in $SIPP_TLS_SUITE";; esac
  # shellcheck disable=SC2086  # one argument per package name
  (cd "$work/debs" && apt-get "${apt[@]}" download $pkgs) >>"$work/apt.log" 2>&1 \
    || _sipp_tls_fail "apt-get download failed: $(tail -1 "$work/apt.log")"
  local deb
  for deb in "$work"/debs/*.deb; do
    dpkg-deb -x "$deb" "$work/root" || _sipp_tls_fail "cannot unpack $deb"
  done
  local loader libdir
  loader=$(cd "$work/root" && ls usr/lib/*/ld-linux*.so.* 2>/dev/null | head -1 || true)
  [ -n "$loader" ] || _sipp_tls_fail "no dynamic loader in $SIPP_TLS_SUITE's libc6"
  libdir=$(dirname "$loader")
  gcc -shared -fPIC -O2 -Wall -Werror -o "$work/sipp-tls-fd.so" scripts/sipp-tls-fd.c -ldl \
    || _sipp_tls_fail "cannot build scripts/sipp-tls-fd.c"
  # The wrapper: trixie's loader runs trixie's sipp on trixie's libraries only.
  cat >"$work/sipp" <<EOF
#!/bin/sh
# Debian $SIPP_TLS_SUITE's sip-tester on its own libraries (written by scripts/sipp-tls.sh).
d=\$(dirname "\$(readlink -f "\$0")")
exec "\$d/root/$loader" --preload "\$d/sipp-tls-fd.so" --library-path "\$d/root/$libdir" \\
  "\$d/root/usr/bin/sipp" "\$@"
EOF
  chmod +x "$work/sipp"
  _sipp_tls_stamp >"$work/stamp"
  (cd "$work/debs" && ls) >"$work/packages.txt"
  rm -rf "$work/debs" "$work/apt"
  _sipp_has_tls "$work/sipp" \
    || _sipp_tls_fail "$SIPP_TLS_SUITE's sipp does not run or lacks TLS: $("$work/sipp" -v 2>&1 | grep -m1 .)"
  rm -rf "$dir" && mv "$work" "$dir" || _sipp_tls_fail "cannot move $work to $dir"
  echo "SIPp with TLS: $("$dir/sipp" -v 2>&1 | grep -m1 SIPp)"
}
