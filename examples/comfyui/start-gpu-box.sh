#!/usr/bin/env bash
# A cloud GPU box: fetch the team's manifests, pull what the workflows need, then start ComfyUI.
# Models arrive verified into ComfyUI's models/; anything else loads on first use.
set -euo pipefail
COMFYUI=${COMFYUI:-/srv/ComfyUI}
WORKFLOWS=${WORKFLOWS:-/srv/workflows}
export CMCACHE_COMFYUI="$COMFYUI"          # root becomes $COMFYUI/models

cmcache sync                                # only changed lists travel
cmcache comfyui install                     # idempotent: dropdowns list catalog models
shopt -s nullglob
flows=("$WORKFLOWS"/*.json)
if ((${#flows[@]})); then
  args=(); for f in "${flows[@]}"; do args+=(--workflow "$f"); done
  cmcache pull --priority high "${args[@]}" || echo "some workflow models are unknown; see above"
fi
cmcache prune --max-size "${CMCACHE_BUDGET:-400G}"   # leave room on a 500 GB disk
exec python "$COMFYUI/main.py" --listen 0.0.0.0 --port 8188
