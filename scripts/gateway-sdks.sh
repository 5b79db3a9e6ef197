#!/usr/bin/env bash
# Installs the merchant SDKs that the gateway.do test drives, into target/gateway-sdks/:
#   fzlee/     a virtual environment with PyPI python-alipay-sdk 3.4.0
#   official/  a virtual environment with PyPI alipay-sdk-python 3.7.1411 (both are the
#              top-level package `alipay`, so they cannot share one)
#   node/      npm alipay-sdk 4.14.0 (node_modules/alipay-sdk)
# What is already there is kept; a part is there once its .installed stamp names its version.
# Python's venv and Node (18 or later) come from Debian's packages when missing (as root).
# Prints one line per thing it installs and nothing when all is there; exits non-zero when
# something could not be installed (pip's and npm's output is then in target/gateway-sdks/*.log).
set -euo pipefail
cd "$(dirname "$0")/.."

dir=target/gateway-sdks
fzlee=python-alipay-sdk==3.4.0
official=alipay-sdk-python==3.7.1411
node=alipay-sdk@4.14.0

say() { echo "gateway-sdks.sh: $*" >&2; }
fail() { say "$*"; exit 1; }
installed() { [ -f "$dir/$1/.installed" ] && [ "$(cat "$dir/$1/.installed")" = "$2" ]; }

updated=
apt_install() {
    [ "$(id -u)" -eq 0 ] || return 1
    if [ -z "$updated" ]; then
        apt-get update -qq >/dev/null 2>&1 || return 1
        updated=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null 2>&1 \
        || return 1
    say "installed $* (apt-get)"
}

# A virtual environment at $dir/$1 with the pip requirement $2 (and pip's extra flags after it).
venv() {
    local name=$1 req=$2 at=$dir/$1
    shift 2
    installed "$name" "$req" && return 0
    rm -rf "$at"
    mkdir -p "$dir"
    if ! python3 -m venv "$at" >/dev/null 2>&1; then
        rm -rf "$at"
        apt_install python3-venv || fail "could not install python3-venv (apt-get install python3-venv)"
        python3 -m venv "$at" >/dev/null 2>&1 || fail "could not make a Python virtual environment in $at"
    fi
    "$at/bin/pip" install -q --disable-pip-version-check "$@" "$req" >"$dir/$name.log" 2>&1 \
        || fail "could not install $req into $at (pip install $* $req; its output is in $dir/$name.log)"
    rm -f "$dir/$name.log"
    echo "$req" >"$at/.installed"
    say "installed $req into $at"
}

venv fzlee "$fzlee"
venv official "$official" --no-compile

if ! installed node "$node"; then
    if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
        apt_install nodejs npm || fail "could not install Node.js (apt-get install nodejs npm)"
    fi
    major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
    [ "$major" -ge 18 ] || fail "$node needs Node.js 18 or later; node is $(node --version 2>&1)"
    rm -rf "$dir/node"
    mkdir -p "$dir/node"
    npm install --prefix "$dir/node" --no-audit --no-fund --fetch-timeout=60000 --fetch-retries=1 "$node" >"$dir/node.log" 2>&1 \
        || fail "could not install $node into $dir/node (npm install $node; its output is in $dir/node.log)"
    rm -f "$dir/node.log"
    echo "$node" >"$dir/node/.installed"
    say "installed $node into $dir/node"
fi
