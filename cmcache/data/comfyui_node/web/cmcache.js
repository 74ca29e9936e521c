// cmcache in ComfyUI's page: a workflow's declared models become on-demand before ComfyUI looks
// for missing models, and the Models panel shows every download as it happens.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { Panel, showNotice } from "./panel.js";

const STATUS_WAIT_MS = 3000; // how long a workflow load waits to learn whether cmcache works

let available = null; // null: not known yet; true / false once /cmcache/status answered
let statusAnswer = null;
let pendingCheck = null; // a loaded workflow that declares nothing, for afterConfigureGraph
const panel = new Panel({
  pause: (id) => act("pause", id),
  resume: (id) => act("resume", id),
  cancel: (id) => act("cancel", id),
});

async function post(path, body) {
  const response = await api.fetchApi(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(data.error || `${path}: HTTP ${response.status}`);
  return data;
}

async function act(action, id) {
  try {
    await post(`/cmcache/${action}`, { ids: [id] });
  } catch (error) {
    console.warn(`cmcache: ${action} failed:`, error);
  }
}

function unavailable(why) {
  available = false;
  document.getElementById("cmcache-panel")?.remove();
  showNotice(`cmcache is not working, so models are not fetched on demand (${why}).`);
}

async function learnStatus() {
  try {
    const response = await api.fetchApi("/cmcache/status");
    const data = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
    if (!response.ok || data.error) {
      unavailable(data.error || `HTTP ${response.status}`);
      return;
    }
    available = true;
    panel.apply(data);
  } catch (error) {
    unavailable(String(error));
  }
}

// Whether a UI-format workflow declares any model (root, nodes, subgraphs).
function declaresModels(graph) {
  if (!graph || typeof graph !== "object") return false;
  const graphs = [graph, ...(graph.definitions?.subgraphs || [])];
  if (Array.isArray(graph.models) && graph.models.length) return true;
  return graphs.some((g) =>
    (g.nodes || []).some((n) => Array.isArray(n?.properties?.models) && n.properties.models.length),
  );
}

async function checkWorkflow(graph) {
  const answer = await post("/cmcache/workflow", graph);
  panel.showMissing(answer.models || []);
  return answer;
}

// Whether a dropdown of the loaded graph (subgraphs included) holds a value not among its options.
function lacksAValue() {
  const graphs = [app.graph, ...(app.graph?.subgraphs?.values?.() || [])];
  return graphs.some((g) =>
    (g?.nodes || g?._nodes || []).some((node) =>
      (node.widgets || []).some(
        (w) =>
          w.type === "combo" &&
          typeof w.value === "string" &&
          Array.isArray(w.options?.values) &&
          !w.options.values.includes(w.value),
      ),
    ),
  );
}

// The node types a workflow uses, subgraphs included.
function nodeTypes(graph) {
  const graphs = [graph, ...(graph.definitions?.subgraphs || [])];
  return [...new Set(graphs.flatMap((g) => (g.nodes || []).map((n) => n?.type)).filter(Boolean))];
}

// Fresh definitions (dropdown values) for just the types this workflow uses: cheaper than
// reloading all of them, and done before ComfyUI builds the nodes and looks for missing models.
async function refreshTypes(types) {
  if (typeof app.registerNodeDef !== "function") return app.refreshComboInNodes?.();
  await Promise.all(
    types.map(async (type) => {
      const response = await api.fetchApi(`/object_info/${encodeURIComponent(type)}`);
      if (!response.ok) return;
      const defs = await response.json();
      if (defs[type]) await app.registerNodeDef(type, defs[type]);
    }),
  );
}

async function beforeLoad(graph) {
  if (!graph || !Array.isArray(graph.nodes)) return;
  if (!declaresModels(graph)) {
    pendingCheck = graph; // nothing to register: afterConfigureGraph asks only if need be
    return;
  }
  if (available === null) {
    await Promise.race([statusAnswer, new Promise((r) => setTimeout(r, STATUS_WAIT_MS))]);
  }
  if (available === false) return;
  try {
    const answer = await checkWorkflow(graph);
    const fromWorkflow = (answer.models || []).some(
      (m) => m.source === "workflow" && (m.state === "on-demand" || m.state === "present"),
    );
    if (answer.registered || fromWorkflow) await refreshTypes(nodeTypes(graph));
  } catch (error) {
    console.warn("cmcache: could not check the workflow's models:", error);
  }
}

app.registerExtension({
  name: "cmcache.models",
  async setup() {
    panel.mount();
    statusAnswer = learnStatus();
    api.addEventListener("cmcache.progress", (event) => {
      if (available !== false) panel.apply(event.detail || {});
    });
    api.addEventListener("reconnected", () => {
      if (available !== false) learnStatus();
    });
  },
  async beforeConfigureGraph(graph) {
    pendingCheck = null;
    await beforeLoad(graph);
  },
  async afterConfigureGraph() {
    // A workflow that declares nothing: cmcache is asked why a model cannot be had only when a
    // dropdown holds a value ComfyUI does not list (most loads ask nothing, start nothing).
    const graph = pendingCheck;
    pendingCheck = null;
    if (!graph) return; // a workflow that declares models was checked before it was built
    if (!lacksAValue()) {
      panel.showMissing([]);
      return;
    }
    setTimeout(async () => {
      await statusAnswer;
      if (available) checkWorkflow(graph).catch((e) => console.warn("cmcache:", e));
    }, 0);
  },
});
