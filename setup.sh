#!/usr/bin/env bash
# Set up ferry on a fresh Debian machine: system packages, then a virtualenv in
# .venv with ferry installed editable. `setup.sh --test` also installs what the
# test suite needs (real servers: nginx, wsgidav). Safe to run again.
set -euo pipefail
cd "$(dirname "$0")"
want_test=0
[ "${1:-}" = "--test" ] && want_test=1

apt_pkgs=()
if [ "$want_test" = 1 ]; then
    command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || apt_pkgs+=(nginx-light)
    command -v ch-run >/dev/null 2>&1 || apt_pkgs+=(charliecloud-runtime)
    [ -x /bin/busybox ] || apt_pkgs+=(busybox-static)
    [ -x /usr/sbin/sshd ] || apt_pkgs+=(openssh-server)
    command -v ssh-keygen >/dev/null 2>&1 || apt_pkgs+=(openssh-client)
fi
if [ "${#apt_pkgs[@]}" -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "setup.sh: need root to install ${apt_pkgs[*]} (or install them yourself)" >&2
        exit 1
    fi
    echo "setup.sh: installing Debian packages: ${apt_pkgs[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${apt_pkgs[@]}" >/dev/null
fi

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
extras="all"
[ "$want_test" = 1 ] && extras="all,test"
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[$extras]"
if [ "$want_test" = 1 ]; then
    # the example third-party plugin: the suite checks it is found and passes the kit
    .venv/bin/python -m pip install -q --disable-pip-version-check -e examples/ferry-store
fi
