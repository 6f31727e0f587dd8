#!/usr/bin/env bash
# The Nix package's check phase as the build sandbox runs it, where Nix cannot build: the test
# flags nix/package.nix gives buildRustPackage (read from that file by nix-instantiate, never
# restated here), each resulting test binary run
#   - as an unprivileged uid with no /etc/passwd entry (a sandbox build user),
#   - in a network namespace of its own with only loopback (the sandbox has no network),
#   - in a root filesystem of its own (chroot), as the sandbox has: /bin holds only what the
#     derivation provides, stdenv's tools (coreutils findutils diffutils sed grep gawk tar gzip
#     bzip2 xz bash make patch file: nixpkgs pkgs/stdenv/generic/common-path.nix) plus its
#     nativeBuildInputs/nativeCheckInputs (none today), and /bin/sh; shared libraries; /etc
#     with passwd/group/hosts only; /dev, /proc, a fresh /build; and the repository at its own
#     path. No python3, sshd, ssh, ip, /usr/bin or /sbin,
#   - with HOME=/homeless-shelter, TMPDIR=/build, PATH=/bin, from its package's directory.
# The binaries are built in the dev profile (the check phase uses release; that changes
# nothing a test can see of its environment, and the dev build is already there after the
# test command). Root needed (namespaces, setpriv). Exits non-zero naming the failed binaries.
set -euo pipefail
# What this makes for the sandbox user (the chroot's libraries and tools) is readable whatever
# the caller's umask, as the Nix store is.
umask 022
cd "$(dirname "$0")/../.."
repo=$PWD
[ "$(id -u)" -eq 0 ] || { echo "check-phase: needs root (namespaces, setpriv)" >&2; exit 1; }
SANDBOX_UID=30001 SANDBOX_GID=30000
if getent passwd "$SANDBOX_UID" >/dev/null; then
  echo "check-phase: uid $SANDBOX_UID has a passwd entry here; the sandbox user has none" >&2
  exit 1
fi

export NIX_STATE_DIR="${NIX_STATE_DIR:-$(mktemp -d)}" NIX_PATH=
# What the derivation declares: buildRustPackage's arguments, with just enough lib for the file.
package_args='import ./nix/package.nix {
  lib = {
    fileset = { toSource = a: a.fileset; unions = map toString; };
    platforms.linux = [];
  };
  rustPlatform.buildRustPackage = args: args;
}'
flags_json=$(nix-instantiate --eval --strict --json -E "($package_args).cargoTestFlags")
mapfile -t flags < <(jq -r '.[]' <<<"$flags_json")
[ ${#flags[@]} -gt 0 ] || { echo "check-phase: nix/package.nix gives no cargoTestFlags ($flags_json)" >&2; exit 1; }
inputs=$(nix-instantiate --eval --strict --json -E \
  "let a = ($package_args); in (a.nativeBuildInputs or []) ++ (a.nativeCheckInputs or []) ++ (a.checkInputs or [])")
if [ "$inputs" != "[]" ]; then
  echo "check-phase: nix/package.nix declares build/check inputs ($inputs): give this script their Debian equivalents" >&2
  exit 1
fi
echo "== check phase: cargo test ${flags[*]} (from nix/package.nix), sandbox-like"

work=$(mktemp -d /tmp/sshlab-check-phase.XXXXXX)
chmod 0755 "$work"
declare -A restore=()
cleanup() {
  for d in "${!restore[@]}"; do chmod "${restore[$d]}" "$d"; done
  rm -rf "$work"
}
trap cleanup EXIT

# /bin: stdenv's tools only (copies: the new root has no /usr/bin for links to point at).
root="$work/root"
mkdir -p "$root"/{bin,etc,dev,proc,build,usr/lib,usr/lib64,.sandbox}
for pkg in coreutils findutils diffutils sed grep gawk tar gzip bzip2 xz-utils bash make patch file; do
  dpkg -L "$pkg" | grep -E '^/(usr/)?s?bin/[^/]+$' | while read -r f; do
    [ -f "$f" ] && [ -x "$f" ] && cp -L "$f" "$root/bin/$(basename "$f")"
  done
done
cp -L /bin/bash "$root/bin/sh"
ln -s usr/lib "$root/lib"
ln -s usr/lib64 "$root/lib64"
for forbidden in python3 sshd ssh ip tc busybox nix-instantiate ldconfig; do
  [ ! -e "$root/bin/$forbidden" ] || { echo "check-phase: $forbidden leaked into /bin" >&2; exit 1; }
done
# The sandbox's /etc: root, nixbld's group, nobody; no entry for the build user.
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$root/etc/passwd"
printf 'root:x:0:\nnixbld:x:%s:\nnogroup:x:65534:\n' "$SANDBOX_GID" >"$root/etc/group"
printf '127.0.0.1 localhost\n::1 localhost\n' >"$root/etc/hosts"
cp /etc/ld.so.cache "$root/etc/"
# Outside /bin: what this script itself needs once inside.
cp -L "$(command -v setpriv)" "$(command -v env)" "$root/.sandbox/"

build_json=$(cargo test --locked "${flags[@]}" --no-run --message-format=json) || {
  echo "check-phase: building the test binaries failed (cargo's messages above)" >&2
  exit 1
}
mapfile -t bins < <(jq -r 'select(.reason == "compiler-artifact" and .profile.test == true and .executable != null)
  | "\(.manifest_path)\t\(.executable)"' <<<"$build_json")
[ ${#bins[@]} -gt 0 ] || { echo "check-phase: no test binaries were built" >&2; exit 1; }

# Where cargo puts the binaries (inside the repository unless CARGO_TARGET_DIR moves it).
target=$(cargo metadata --locked --no-deps --format-version 1 | jq -r .target_directory)

# The sources as the build has them (nix/package.nix's `src` fileset, owned by the build in
# the sandbox): copied, readable by the sandbox user whatever modes the checkout has (a clone
# made under umask 077 is its owner's alone), and mounted at the repository's path. The test
# binaries likewise, beside them.
srcs_json=$(nix-instantiate --eval --strict --json -E "($package_args).src")
mapfile -t srcs < <(jq -r '.[]' <<<"$srcs_json")
stage="$work/source"
mkdir -p "$stage/.check-phase-bin"
for p in "${srcs[@]}"; do
  git ls-files -z --cached --others --exclude-standard -- "${p#"$repo"/}" | xargs -0 cp --parents -t "$stage"
done
for entry in "${bins[@]}"; do cp "${entry#*$'\t'}" "$stage/.check-phase-bin/"; done
chmod -R a+rX "$stage"

# The sandbox user must reach the sources and binaries: open the directories above the
# repository for traversal while this runs (restored on exit).
for d in "$repo" "$target"; do
  while [ "$d" != / ]; do
    mode=$(stat -c %a "$d")
    if [ $((0$mode & 01)) -eq 0 ] && [ -z "${restore[$d]:-}" ]; then
      restore[$d]=$mode
      chmod o+x "$d"
    fi
    d=$(dirname "$d")
  done
done

failed=()
total_pass=0
for entry in "${bins[@]}"; do
  manifest=${entry%%$'\t'*}
  exe=${entry#*$'\t'}
  pkgdir=$(dirname "$manifest")
  # A mount and network namespace: lo up as in the sandbox, the new root assembled, then the
  # build user with nothing but the declared environment.
  # A pid namespace too: nothing a test starts outlives it (or keeps the mounts alive).
  if out=$(unshare --mount --net --pid --fork --kill-child --propagation private bash -c "
      set -e
      ip link set lo up
      mount --rbind /dev '$root/dev'
      mount -t proc proc '$root/proc'
      mount -t tmpfs -o mode=0755 tmpfs '$root/build'
      chown $SANDBOX_UID:$SANDBOX_GID '$root/build'
      mount --bind -o ro /usr/lib '$root/usr/lib'
      mount --bind -o ro /usr/lib64 '$root/usr/lib64'
      mkdir -p '$root$repo'
      mount --bind -o ro '$stage' '$root$repo'
      cd '$pkgdir'
      exec chroot '$root' /.sandbox/setpriv --reuid=$SANDBOX_UID --regid=$SANDBOX_GID \
        --clear-groups /.sandbox/env -i HOME=/homeless-shelter TMPDIR=/build PATH=/bin \
        CARGO_MANIFEST_DIR='$pkgdir' RUST_BACKTRACE=0 sh -c 'cd \"\$CARGO_MANIFEST_DIR\" && exec \"\$0\" --test-threads=2' '$repo/.check-phase-bin/$(basename "$exe")'
    " 2>&1); then
    n=$(grep -oE '^test result: ok\. [0-9]+ passed' <<<"$out" | grep -oE '[0-9]+' | head -1)
    total_pass=$((total_pass + ${n:-0}))
    echo "check phase: ok   $(basename "$exe") (${n:-0} passed)"
  else
    failed+=("$(basename "$exe")")
    echo "check phase: FAIL $(basename "$exe")"
    { grep -E '^test .* FAILED$|panicked at|^---- ' <<<"$out" || true; } | head -40
    tail -5 <<<"$out"
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "check phase: FAILED in ${failed[*]}"
  exit 1
fi
echo "check phase: ok ($total_pass tests in ${#bins[@]} binaries, as the sandbox would run them)"
