#!/usr/bin/env bash
# Bake models into a ComfyUI image during a CI build (e.g. a Dockerfile RUN step).
# Every step fails the build on error; no aria2c is left running afterwards.
set -euo pipefail

export CMCACHE_HOME=/opt/cmcache            # config and synced manifests inside the image
export CMCACHE_ROOT=/opt/ComfyUI/models     # where ComfyUI looks for models

pip install --no-cache-dir cmcache
cmcache config init
cmcache config set cache.max_size 120G
cmcache sync
# One ref per line, '#' comments allowed; exit 0 only when every model is present and verified.
cmcache --no-progress pull --file /build/models.txt --concurrent 4
cmcache --json list --cached > /opt/cmcache/baked-models.json
