# Sourced by the engine scripts (.ci/engines/*.sh): install_missing COMMAND=PACKAGE ... installs, with
# Debian's apt, the package of each command that is not on PATH (all in one apt run; none when all are).
install_missing() {
  local need=() pair
  for pair in "$@"; do
    command -v "${pair%%=*}" >/dev/null 2>&1 || need+=("${pair#*=}")
  done
  if [ "${#need[@]}" -gt 0 ]; then
    echo "installing: ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
}
