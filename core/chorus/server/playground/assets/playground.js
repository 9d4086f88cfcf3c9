// The Chorus playground: a plain script, no framework, no build step, no third-party code.
//
// It talks to this server's own OpenAI API with fetch: GET v1/models (the model picker and each
// bot's capabilities) and POST v1/chat/completions with stream: true (the answer as it streams,
// url_citation annotations as numbered source links, the opt-in x-chorus-progress events, and the
// usage chunk of stream_options.include_usage). Everything shown is set with textContent or as
// attributes on elements built here: no untrusted string is ever parsed as HTML. The key lives in
// sessionStorage only (gone when the tab closes).
"use strict";

(() => {
  const KEY_STORE = "chorus.playground.key";
  const MODEL_STORE = "chorus.playground.model";
  const MARKER = /^\[\d{1,3}(?:\s*,\s*\d{1,3})*\]$/;

  const $ = (id) => document.getElementById(id);
  const ui = {
    keyForm: $("key-form"), key: $("api-key"), forget: $("forget"), model: $("model"), caps: $("caps"),
    responses: document.querySelector('input[name="api"][value="responses"]'),
    responsesChoice: $("responses-choice"), responsesNote: $("responses-note"),
    progress: $("progress"), system: $("system"), newChat: $("new-chat"), status: $("status"),
    transcript: $("transcript"), composer: $("composer"), message: $("message"), send: $("send"),
    stop: $("stop"), template: $("turn-template"),
  };

  const state = { key: "", models: new Map(), history: [], controller: null, turns: 0 };

  // -- small DOM helpers (text only) -------------------------------------------------------------

  function h(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (name === "class") node.className = value;
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children) {
      if (child === undefined || child === null || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function setStatus(text, kind) {
    ui.status.textContent = text || "";
    ui.status.dataset.kind = kind || "";
  }

  function safeHref(url) {
    try {
      const parsed = new URL(url, window.location.href);
      return parsed.protocol === "http:" || parsed.protocol === "https:" ? parsed.href : null;
    } catch {
      return null;
    }
  }

  function ms(value) {
    return value < 1000 ? `${Math.round(value)} ms` : `${(value / 1000).toFixed(2)} s`;
  }

  // -- the API -----------------------------------------------------------------------------------

  function headers(extra) {
    return { authorization: `Bearer ${state.key}`, ...extra };
  }

  async function errorMessage(response) {
    try {
      const body = await response.json();
      if (body && body.error && body.error.message) return `${response.status}: ${body.error.message}`;
    } catch { /* not JSON */ }
    return `HTTP ${response.status}`;
  }

  async function connect(key) {
    state.key = key.trim();
    if (!state.key) {
      setStatus("Paste a workspace API key first.", "error");
      ui.key.focus();
      return;
    }
    setStatus("Connecting…");
    let response;
    try {
      response = await fetch("v1/models", { headers: headers() });
    } catch (error) {
      setStatus(`Could not reach the server: ${error.message}`, "error");
      return;
    }
    if (!response.ok) {
      setStatus(`The server refused the key (${await errorMessage(response)}).`, "error");
      ui.key.focus();
      ui.key.select();
      return;
    }
    const listing = await response.json();
    sessionStorage.setItem(KEY_STORE, state.key);
    fillModels(listing.data || []);
    setStatus(`Connected: ${state.models.size} models and bots.`, "ok");
    ui.message.disabled = false;
    ui.send.disabled = false;
    ui.message.focus();
  }

  function fillModels(models) {
    state.models = new Map(models.map((m) => [m.id, m]));
    ui.model.replaceChildren();
    const bots = models.filter((m) => m.capabilities);
    const plain = models.filter((m) => !m.capabilities);
    for (const [label, group] of [["Bots", bots], ["Models", plain]]) {
      if (!group.length) continue;
      const optgroup = h("optgroup", { label });
      for (const m of group) {
        optgroup.append(h("option", { value: m.id }, m.capabilities ? `${m.name || m.id} (${m.id})` : m.id));
      }
      ui.model.append(optgroup);
    }
    if (!models.length) ui.model.append(h("option", { value: "" }, "No models for this key"));
    const remembered = sessionStorage.getItem(MODEL_STORE);
    ui.model.value = state.models.has(remembered) ? remembered : (bots[0] || plain[0] || { id: "" }).id;
    ui.model.disabled = !models.length;
    showCapabilities();
  }

  function showCapabilities() {
    const model = state.models.get(ui.model.value);
    ui.caps.replaceChildren();
    if (!model) return;
    const rows = [];
    const add = (term, value) => rows.push(h("dt", {}, term), h("dd", {}, value));
    const list = (items) => (items && items.length ? items.join(", ") : "none");
    const caps = model.capabilities;
    if (!caps) {
      add("kind", "plain model");
      add("provider", model.owned_by || "");
      add("instructions", "your system prompt");
    } else {
      add("kind", "bot");
      if (model.description) add("about", model.description);
      add("datasets", list(caps.datasets));
      add("skillsets", list(caps.skillsets));
      add("tools", list(caps.server_tools));
      add("web search", caps.search ? `${caps.search.engine} (${caps.search.mode})` : "none");
      add("team", list(caps.team));
      add("backstory", caps.backstory ? "yes" : "none");
    }
    ui.caps.append(h("dl", {}, ...rows));
  }

  // The switch to the Responses API. The hook: the page asks `OPTIONS v1/responses` (no key
  // needed); a server that serves `POST v1/responses` answers with an `allow` header naming POST.
  // A server without the API answers 404 and the switch stays disabled with its tooltip.
  async function detectResponses() {
    let available = false;
    try {
      const response = await fetch("v1/responses", { method: "OPTIONS" });
      available = response.ok && (response.headers.get("allow") || "").toUpperCase().includes("POST");
    } catch { /* offline: leave it disabled */ }
    ui.responses.disabled = !available;
    ui.responsesChoice.title = available ? "" : "Responses API coming";
    ui.responsesNote.hidden = available;
    document.body.dataset.responses = available ? "available" : "coming";
  }

  function selectedApi() {
    const chosen = document.querySelector('input[name="api"]:checked');
    return chosen && !chosen.disabled ? chosen.value : "chat";
  }

  // -- SSE -----------------------------------------------------------------------------------------

  async function* sseEvents(response) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    const boundary = /\r\n\r\n|\n\n|\r\r/;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let match;
      while ((match = boundary.exec(buffer))) {
        const block = buffer.slice(0, match.index);
        buffer = buffer.slice(match.index + match[0].length);
        const data = [];
        let event = "message";
        for (const line of block.split(/\r\n|\n|\r/)) {
          if (!line || line.startsWith(":")) continue; // comments: keep-alives
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          let text = colon < 0 ? "" : line.slice(colon + 1);
          if (text.startsWith(" ")) text = text.slice(1);
          if (field === "data") data.push(text);
          else if (field === "event") event = text;
        }
        if (data.length) yield { event, data: data.join("\n") };
      }
    }
  }

  // -- turns -----------------------------------------------------------------------------------------

  function newTurn(role, text) {
    state.turns += 1;
    const node = ui.template.content.firstElementChild.cloneNode(true);
    node.id = `turn-${state.turns}`;
    node.classList.add(role);
    node.querySelector(".who").textContent = role === "user" ? "You" : (ui.model.selectedOptions[0]?.textContent || "");
    const turn = {
      id: node.id, node, role, text: text || "", annotations: [], keys: new Set(), progress: [],
      content: node.querySelector(".content"), sources: node.querySelector(".sources"),
      progressList: node.querySelector(".progress"), stats: node.querySelector(".stats"),
      started: performance.now(), firstToken: null, deltas: 0, usage: null, pending: false,
    };
    turn.content.textContent = turn.text;
    ui.transcript.append(node);
    node.scrollIntoView({ block: "end" });
    return turn;
  }

  function addAnnotations(turn, annotations) {
    for (const a of annotations || []) {
      const c = a && a.type === "url_citation" ? a.url_citation || a : null;
      if (!c || !c.url) continue;
      const key = `${c.start_index}|${c.end_index}|${c.url}`;
      if (turn.keys.has(key)) continue;
      turn.keys.add(key);
      turn.annotations.push({ url: c.url, title: c.title || c.url, start: c.start_index, end: c.end_index });
    }
  }

  function scheduleRender(turn) {
    if (turn.pending) return;
    turn.pending = true;
    requestAnimationFrame(() => {
      turn.pending = false;
      render(turn);
    });
  }

  // The answer's text with its citation markers turned into numbered links. Sources are numbered
  // in order of first citation; a marker like "[1, 2]" becomes one link per source it names. An
  // annotation whose span is not a marker (a citation attributed to the whole answer) is listed
  // after the text.
  function render(turn) {
    const numbers = new Map();
    const ordered = [...turn.annotations].sort((a, b) => (a.start ?? Infinity) - (b.start ?? Infinity));
    for (const a of ordered) if (!numbers.has(a.url)) numbers.set(a.url, { n: numbers.size + 1, title: a.title });
    const inline = new Map();
    const trailing = [];
    for (const a of ordered) {
      const span = Number.isInteger(a.start) && Number.isInteger(a.end) && a.end <= turn.text.length
        ? turn.text.slice(a.start, a.end) : "";
      if (MARKER.test(span)) {
        const k = `${a.start}:${a.end}`;
        if (!inline.has(k)) inline.set(k, { start: a.start, end: a.end, urls: [] });
        if (!inline.get(k).urls.includes(a.url)) inline.get(k).urls.push(a.url);
      } else if (!trailing.includes(a.url)) {
        trailing.push(a.url);
      }
    }
    const link = (url) => {
      const { n, title } = numbers.get(url);
      const external = safeHref(url);
      return h("a", {
        class: "cite", href: external || `#${turn.id}-source-${n}`, "aria-label": `source ${n}: ${title}`,
        title, target: external ? "_blank" : null, rel: external ? "noopener noreferrer" : null,
        "data-source": n,
      }, String(n));
    };
    const group = (urls) => {
      const g = h("span", { class: "cite-group" }, "[");
      urls.forEach((url, i) => g.append(...(i ? [", "] : []), link(url)));
      g.append("]");
      return g;
    };
    const parts = [];
    let at = 0;
    for (const g of [...inline.values()].sort((a, b) => a.start - b.start)) {
      if (g.start < at) continue;
      parts.push(turn.text.slice(at, g.start), group(g.urls));
      at = g.end;
    }
    parts.push(turn.text.slice(at));
    if (trailing.length) parts.push(" ", group(trailing));
    turn.content.replaceChildren(...parts.filter((p) => p !== ""));

    turn.sources.replaceChildren();
    for (const [url, { n, title }] of numbers) {
      const external = safeHref(url);
      turn.sources.append(h("li", { id: `${turn.id}-source-${n}`, value: n },
        external ? h("a", { href: external, target: "_blank", rel: "noopener noreferrer" }, title) : h("span", {}, title),
        title !== url ? h("code", {}, url) : null));
    }
    turn.node.dataset.deltas = String(turn.deltas);
  }

  // tool.started / tool.finished name the tool: ask_<member> is a team member, web_search the web.
  function describe(event) {
    const name = typeof event.name === "string" ? event.name : "";
    const [start, end] = name.startsWith("ask_") ? [`asking team member ${name.slice(4)}…`, `${name.slice(4)} answered`]
      : name === "web_search" ? ["searching the web…", "web search done"]
        : [`running tool ${name}…`, `tool ${name} done`];
    if (event.type === "tool.started") return start;
    if (event.type === "tool.finished") return end;
    const { type, ...rest } = event;
    return `${type || "event"} ${JSON.stringify(rest)}`;
  }

  function addProgress(turn, event) {
    const elapsed = performance.now() - turn.started;
    turn.progress.push(event);
    turn.progressList.append(h("li", { "data-type": event.type || "" },
      h("span", { class: "when" }, `+${ms(elapsed)}`), " ", describe(event)));
  }

  function finish(turn, outcome, detail) {
    const total = performance.now() - turn.started;
    render(turn);
    turn.node.dataset.state = outcome;
    turn.node.removeAttribute("aria-busy");
    const parts = [];
    if (turn.firstToken !== null) parts.push(`first token ${ms(turn.firstToken)}`);
    parts.push(`total ${ms(total)}`);
    if (turn.usage) {
      const u = turn.usage;
      const prompt = u.prompt_tokens ?? u.input_tokens ?? 0;
      const completion = u.completion_tokens ?? u.output_tokens ?? 0;
      parts.push(`${prompt} prompt + ${completion} completion = ${u.total_tokens ?? prompt + completion} tokens`);
    }
    turn.stats.textContent = parts.join(" · ");
    turn.stats.dataset.ttft = turn.firstToken === null ? "" : String(Math.round(turn.firstToken));
    turn.stats.dataset.total = String(Math.round(total));
    if (detail) {
      turn.node.append(h("p", { class: outcome === "error" ? "error" : "note", role: outcome === "error" ? "alert" : null },
        detail));
    }
  }

  // -- sending -------------------------------------------------------------------------------------

  function streaming(on) {
    ui.send.disabled = on;
    ui.stop.hidden = !on;
    ui.model.disabled = on || !state.models.size;
    document.body.dataset.streaming = on ? "true" : "false";
  }

  function onDelta(turn, text) {
    if (!text) return;
    if (turn.firstToken === null) turn.firstToken = performance.now() - turn.started;
    turn.text += text;
    turn.deltas += 1;
    scheduleRender(turn);
  }

  async function send() {
    const text = ui.message.value.trim();
    const model = ui.model.value;
    if (!text || state.controller) return;
    if (!model) {
      setStatus("Connect with a key and pick a model first.", "error");
      return;
    }
    sessionStorage.setItem(MODEL_STORE, model);
    ui.message.value = "";
    setStatus("");
    newTurn("user", text);
    state.history.push({ role: "user", content: text });
    const turn = newTurn("assistant");
    turn.node.setAttribute("aria-busy", "true");
    turn.node.dataset.state = "streaming";
    const api = selectedApi();
    const messages = [...(ui.system.value.trim() ? [{ role: "system", content: ui.system.value.trim() }] : []),
      ...state.history];
    const controller = new AbortController();
    state.controller = controller;
    streaming(true);
    const extra = { "content-type": "application/json" };
    if (ui.progress.checked) extra["x-chorus-progress"] = "true";
    const body = api === "responses"
      ? { model, input: messages, stream: true }
      : { model, messages, stream: true, stream_options: { include_usage: true } };
    let outcome = "done";
    let detail = "";
    try {
      const response = await fetch(api === "responses" ? "v1/responses" : "v1/chat/completions", {
        method: "POST", headers: headers(extra), body: JSON.stringify(body), signal: controller.signal,
      });
      if (!response.ok) throw new Error(await errorMessage(response));
      for await (const { data } of sseEvents(response)) {
        if (data === "[DONE]") break;
        const event = JSON.parse(data);
        if (event.error) throw new Error(event.error.message || JSON.stringify(event.error));
        if (event.chorus) addProgress(turn, event.chorus);
        if (api === "responses") handleResponsesEvent(turn, event);
        else handleChatChunk(turn, event);
      }
    } catch (error) {
      if (error.name === "AbortError") {
        outcome = "stopped";
        detail = "Stopped.";
      } else {
        outcome = "error";
        detail = error.message;
      }
    } finally {
      state.controller = null;
      streaming(false);
    }
    if (outcome === "error") {
      state.history.pop(); // the failed question is not part of the conversation
    } else if (turn.text) {
      state.history.push({ role: "assistant", content: turn.text });
    }
    if (turn.toolCalls) detail = detail || `The model asked for client tools (${turn.toolCalls}); the playground runs none.`;
    finish(turn, outcome, detail);
    ui.message.focus();
  }

  function handleChatChunk(turn, chunk) {
    if (chunk.usage) turn.usage = chunk.usage;
    for (const choice of chunk.choices || []) {
      const delta = choice.delta || {};
      if (typeof delta.content === "string") onDelta(turn, delta.content);
      if (delta.annotations) {
        addAnnotations(turn, delta.annotations);
        scheduleRender(turn);
      }
      if (delta.tool_calls) {
        const names = delta.tool_calls.map((c) => c.function && c.function.name).filter(Boolean);
        if (names.length) turn.toolCalls = [turn.toolCalls, ...names].filter(Boolean).join(", ");
      }
    }
  }

  function handleResponsesEvent(turn, event) {
    if (event.type === "response.output_text.delta") onDelta(turn, event.delta);
    else if (event.type === "response.output_text.annotation.added") {
      addAnnotations(turn, [{ type: "url_citation", url_citation: event.annotation }]);
      scheduleRender(turn);
    } else if (event.type === "chorus.progress" && event.progress) addProgress(turn, event.progress);
    else if (event.type === "response.output_item.done" && event.item && event.item.type === "function_call") {
      turn.toolCalls = [turn.toolCalls, event.item.name].filter(Boolean).join(", ");
    } else if (event.type === "response.completed" && event.response) {
      const usage = event.response.usage;
      turn.usage = usage ? { prompt_tokens: usage.input_tokens, completion_tokens: usage.output_tokens,
        total_tokens: usage.total_tokens } : null;
    } else if (event.type === "response.failed") {
      throw new Error((event.response && event.response.error && event.response.error.message) || "the response failed");
    }
  }

  // -- wiring ----------------------------------------------------------------------------------------

  ui.keyForm.addEventListener("submit", (event) => {
    event.preventDefault();
    connect(ui.key.value);
  });
  ui.forget.addEventListener("click", () => {
    sessionStorage.removeItem(KEY_STORE);
    state.key = "";
    ui.key.value = "";
    setStatus("Key forgotten.");
    ui.key.focus();
  });
  ui.model.addEventListener("change", () => {
    sessionStorage.setItem(MODEL_STORE, ui.model.value);
    showCapabilities();
  });
  ui.composer.addEventListener("submit", (event) => {
    event.preventDefault();
    send();
  });
  ui.message.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.altKey && !event.ctrlKey && !event.metaKey
        && !event.isComposing) {
      event.preventDefault();
      send();
    }
  });
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && state.controller) state.controller.abort();
  });
  ui.stop.addEventListener("click", () => state.controller && state.controller.abort());
  ui.newChat.addEventListener("click", () => {
    if (state.controller) state.controller.abort();
    state.history = [];
    ui.transcript.replaceChildren();
    setStatus("New conversation.");
    ui.message.focus();
  });

  detectResponses();
  const saved = sessionStorage.getItem(KEY_STORE);
  if (saved) {
    ui.key.value = saved;
    connect(saved);
  } else {
    ui.key.focus();
  }
  document.body.dataset.ready = "true";
})();
