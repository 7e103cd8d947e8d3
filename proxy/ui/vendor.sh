#!/usr/bin/env bash
# Re-fetch the web console's third-party files into proxy/ui/static/vendor/ (committed: no build
# step, nothing fetched at run time).  Pinned versions; `npm pack` checks each tarball's registry
# integrity, and SHA256SUMS (checked here) pins the files we ship.  Run from anywhere; needs npm.
#
#   cytoscape        graph rendering and the built-in layouts     (MIT)
#   cytoscape-dagre  layered (DAG) layout; bundles @dagrejs/dagre (MIT)
set -euo pipefail
CYTOSCAPE=3.35.0
CYTOSCAPE_DAGRE=4.0.1
DAGRE=3.1.4   # only its licence: cytoscape-dagre's build bundles @dagrejs/dagre ^3
here="$(cd "$(dirname "$0")" && pwd)"
out="$here/static/vendor"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
npm pack --silent "cytoscape@$CYTOSCAPE" "cytoscape-dagre@$CYTOSCAPE_DAGRE" "@dagrejs/dagre@$DAGRE" >/dev/null
for f in *.tgz; do mkdir "${f%.tgz}" && tar xzf "$f" -C "${f%.tgz}"; done
mkdir -p "$out"
cp "cytoscape-$CYTOSCAPE/package/dist/cytoscape.esm.min.mjs" "$out/"
cp "cytoscape-$CYTOSCAPE/package/LICENSE" "$out/LICENSE.cytoscape"
cp "cytoscape-dagre-$CYTOSCAPE_DAGRE/package/dist/cytoscape-dagre.min.mjs" "$out/"
cp "cytoscape-dagre-$CYTOSCAPE_DAGRE/package/LICENSE" "$out/LICENSE.cytoscape-dagre"
cp "dagrejs-dagre-$DAGRE/package/LICENSE" "$out/LICENSE.dagre"
cat >"$out/VERSIONS" <<VERSIONS
cytoscape $CYTOSCAPE (npm) dist/cytoscape.esm.min.mjs
cytoscape-dagre $CYTOSCAPE_DAGRE (npm) dist/cytoscape-dagre.min.mjs, which bundles @dagrejs/dagre ^3 (licence: @dagrejs/dagre $DAGRE)
fetched by proxy/ui/vendor.sh
VERSIONS
cd "$out"
if [ -f SHA256SUMS ] && [ "${1:-}" != "--update-sums" ]; then
  sha256sum -c --quiet SHA256SUMS
else
  sha256sum cytoscape.esm.min.mjs cytoscape-dagre.min.mjs >SHA256SUMS
fi
echo "vendor files in $out:" && cat "$out/VERSIONS"
