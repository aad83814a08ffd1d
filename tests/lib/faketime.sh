# Sourced by tests that run keyline's programs under libfaketime (a clock set ahead or back).
# kl_libfaketime: LIBFT, the multi-threaded library's path (scripts/deps installs faketime), and
# ASan told not to object to it being preloaded ahead of its runtime (--sanitize builds: it
# works so). Prints why and returns 1 when the library is not there.
kl_libfaketime() {
  local p
  LIBFT=
  for p in /usr/lib/*/faketime/libfaketimeMT.so.1 /usr/lib/faketime/libfaketimeMT.so.1; do
    [ -e "$p" ] && LIBFT=$p && break
  done
  if [ -z "$LIBFT" ]; then
    echo "libfaketimeMT.so.1 not found (scripts/deps installs faketime)" >&2
    return 1
  fi
  export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0"
}
