#!/usr/bin/env bash
# Fetches the pages' vendored libraries (and the browser test's axe-core) again from the npm
# registry at their pinned versions and checks each against the hash in its folder's README.md.
# With --write, puts them in place (after a version bump: update the table's versions and
# hashes first).
set -euo pipefail
cd "$(dirname "$0")/.."
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
fetch() { # package@version, file inside the package, name in the folder, folder
    local vendor=${4:-crates/pages/assets/vendor}
    (cd "$scratch" && npm pack --silent "$1" >/dev/null)
    local tarball
    tarball=$(ls "$scratch"/*.tgz | head -1)
    tar xzf "$tarball" -C "$scratch" "package/$2"
    rm "$tarball"
    local want got
    want=$(grep -F "\`$3\`" "$vendor/README.md" | grep -o '`[0-9a-f]\{64\}`' | tr -d '`')
    got=$(sha256sum "$scratch/package/$2" | cut -d' ' -f1)
    if [ "$want" != "$got" ]; then
        echo "vendor-pages: $1 $2 hashes $got, the README pins $want" >&2
        exit 1
    fi
    if [ "${WRITE:-}" = 1 ]; then cp "$scratch/package/$2" "$vendor/$3"; fi
    rm -rf "$scratch/package"
    echo "vendor-pages: $3 is $1 ($got)"
}
[ "${1:-}" = --write ] && WRITE=1
fetch jsqr@1.4.0 dist/jsQR.js jsQR.js
fetch qrcode-generator@2.0.4 dist/qrcode.js qrcode.js
fetch jsbarcode@3.12.3 dist/barcodes/JsBarcode.code128.min.js JsBarcode.code128.min.js
fetch axe-core@4.14.1 axe.min.js axe.min.js crates/cli/tests/browser
