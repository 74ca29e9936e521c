"""cmcache's part of ComfyUI's server: routes under /cmcache/, progress over the websocket, and
the downloads a queued prompt needs. Every answer comes from cmcache's command line."""

import asyncio
import json
import threading

from .feed import Feed

MAX_BODY = 32 * 1024 * 1024
ACTIONS = ("pause", "resume", "cancel")


def declared_names(workflow):
    """(directory, name) of every model a UI-format workflow declares, subgraphs included."""
    found = []
    graphs = [workflow]
    definitions = workflow.get("definitions")
    if isinstance(definitions, dict) and isinstance(definitions.get("subgraphs"), list):
        graphs += [g for g in definitions["subgraphs"] if isinstance(g, dict)]
    lists = [workflow.get("models")]
    for graph in graphs:
        for node in graph.get("nodes") or []:
            if isinstance(node, dict) and isinstance(node.get("properties"), dict):
                lists.append(node["properties"].get("models"))
    for models in lists:
        for model in models if isinstance(models, list) else []:
            if isinstance(model, dict):
                directory, name = model.get("directory"), model.get("name")
                if isinstance(directory, str) and isinstance(name, str):
                    found.append((directory, name))
    return found


def prompt_body(json_data):
    """What cmcache reads of a /prompt body: the API graph and the page's UI workflow (never the
    rest of extra_data, which may carry keys)."""
    body = {"prompt": json_data.get("prompt")}
    extra = json_data.get("extra_data")
    info = extra.get("extra_pnginfo") if isinstance(extra, dict) else None
    workflow = info.get("workflow") if isinstance(info, dict) else None
    if isinstance(workflow, dict):
        body["extra_data"] = {"extra_pnginfo": {"workflow": workflow}}
        return body, workflow
    return body, None


def plain_refs(refs):
    """Catalog refs from a page: strings, no URLs (a page names models, it brings no hosts)."""
    return isinstance(refs, list) and all(
        isinstance(r, str) and r and ":" not in r and not r.startswith("-") for r in refs
    )


class Node:
    """The node's server side: one per ComfyUI."""

    def __init__(self, instance, cli, catalog, folder_paths, warn_once):
        self.instance = instance
        self.cli = cli
        self.catalog = catalog
        self.folder_paths = folder_paths
        self.warn_once = warn_once
        self.feed = Feed(cli, None, self.send)

    def send(self, event, data):
        try:
            self.instance.send_sync(event, data)
        except Exception as exc:
            self.warn_once("sending progress", exc)

    def start_feed(self):
        try:
            self.catalog.refresh_now()
        except Exception as exc:
            self.warn_once("reading the catalog", exc)
        self.feed.path = self.catalog.queue_log
        self.feed.offset = self.feed.size()
        self.feed.start()

    def spawn(self, *args, data=""):
        """A background cmcache command; reaped by a thread so it leaves no zombie."""
        process = self.cli.spawn(*args, data=data, reap=True)
        self.feed.watch()  # watching from now on: the download shows as soon as it starts
        return process

    def available(self, folder, name):
        """Whether ComfyUI lists the model (on disk, or a catalog model)."""
        try:
            return name in self.folder_paths.get_filename_list(folder)
        except Exception:
            return False

    def check(self, body, pull=False):
        """Register a workflow's declarations and say what each model is (blocking)."""
        envelope = self.cli.json("comfyui", "workflow", "-", timeout=120, data=body)
        data = envelope.get("data")
        if not isinstance(data, dict) or "models" not in data:
            messages = [e.get("message", "") for e in envelope.get("errors", [])]
            raise ValueError("; ".join(messages) or "cmcache could not read the workflow")
        if data.get("registered"):
            self.catalog.add(m for m in data["models"] if m.get("source") == "workflow")
        for model in data["models"]:  # ComfyUI may have it where cmcache does not look
            if model["state"] in ("unknown", "refused") and self.available(
                model["folder"], model["filename"]
            ):
                model["state"], model["reason"] = "present", ""
        if pull:
            wanted = [m["ref"] for m in data["models"] if m["state"] == "on-demand"]
            if wanted:
                self.spawn("-q", "pull", "--priority", "high", *wanted)
        return {"models": data["models"], "registered": data.get("registered", 0)}

    def pull_refs(self, refs):
        """Plan the refs' downloads, then start them in the background (blocking)."""
        if not plain_refs(refs):
            raise ValueError("refs must be a list of catalog refs (no URLs)")
        plan = self.cli.json("pull", "--dry-run", *refs, timeout=120)
        if plan.get("exit_code"):
            raise ValueError("; ".join(e["message"] for e in plan.get("errors", [])))
        self.spawn("-q", "pull", "--priority", "high", *refs)
        return {"plan": plan["data"]["results"]}

    def act(self, action, ids):
        """Pause, resume or cancel downloads by id (blocking)."""
        if not isinstance(ids, list) or not ids or not plain_refs(ids):
            raise ValueError("ids must be a list of download ids")
        done = self.cli.json(action, *ids, timeout=60)
        self.feed.watch()
        if done.get("exit_code"):
            raise ValueError("; ".join(e["message"] for e in done.get("errors", [])))
        return done["data"]

    def on_prompt(self, json_data):
        """A prompt is queued: what it needs starts downloading now, in parallel."""
        try:
            body, workflow = prompt_body(json_data)
            text = json.dumps(body)
            known = getattr(self.folder_paths, "folder_names_and_paths", {})
            if workflow is not None and any(
                self.folder_paths.map_legacy(d) in known and not self.available(d, n)
                for d, n in declared_names(workflow)
            ):
                self.check(text)  # so that validation, right after this, accepts them
            self.spawn("-q", "comfyui", "workflow", "--pull", "-", data=text)
        except Exception as exc:
            self.warn_once("fetching a prompt's models", exc)
        return json_data

    def add_routes(self, routes):
        from aiohttp import web

        async def reply(fn, *args, status=200):
            try:
                data = await asyncio.get_running_loop().run_in_executor(None, fn, *args)
            except Exception as exc:
                return web.json_response({"error": str(exc)}, status=400)
            return web.json_response(data, status=503 if "error" in data else status)

        async def body(request):
            data = await request.read()
            if len(data) > MAX_BODY:
                raise ValueError(f"body over {MAX_BODY} bytes")
            doc = json.loads(data)
            if not isinstance(doc, dict):
                raise ValueError("expected a JSON object")
            return doc, data.decode()

        async def failed(exc):
            return web.json_response({"error": str(exc)}, status=400)

        @routes.get("/cmcache/status")
        async def cmcache_status(request):
            return await reply(self.feed.current, 20.0)

        @routes.post("/cmcache/workflow")
        async def cmcache_workflow(request):
            try:
                _doc, text = await body(request)
            except Exception as exc:
                return await failed(exc)
            return await reply(self.check, text)

        @routes.post("/cmcache/pull")
        async def cmcache_pull(request):
            try:
                doc, text = await body(request)
            except Exception as exc:
                return await failed(exc)
            if "refs" in doc:
                return await reply(self.pull_refs, doc["refs"])
            return await reply(self.check, text, True)  # a workflow: allowed hosts only

        def action_route(action):
            async def handler(request):
                try:
                    doc, _text = await body(request)
                except Exception as exc:
                    return await failed(exc)
                return await reply(self.act, action, doc.get("ids"))

            return handler

        for action in ACTIONS:
            routes.post(f"/cmcache/{action}")(action_route(action))


def serve(instance, cli, catalog, folder_paths, warn_once):
    """Add the routes, the websocket feed and the prompt handler to ComfyUI's server."""
    node = Node(instance, cli, catalog, folder_paths, warn_once)
    if hasattr(instance, "send_sync"):
        threading.Thread(target=node.start_feed, name="cmcache-start", daemon=True).start()
    routes = getattr(instance, "routes", None)
    if routes is not None:
        node.add_routes(routes)
    instance.add_on_prompt_handler(node.on_prompt)
