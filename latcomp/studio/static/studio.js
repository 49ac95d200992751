// latcomp studio: layers on a square canvas, painted masks, and the model's composite, live.
//
// The server holds each layer's pixels; the page holds where each layer sits and its painted mask, and
// sends an edit (placements + the masks that changed) whenever something changes. Latest wins: one edit
// is in flight at a time and changes made meanwhile are folded into the next one, so the result always
// catches up with the newest state and never replays stale ones. The collage the model sees is made on
// the server by latcomp.compose, exactly as for the gRPC service; the collage drawn here is only a view.

const $ = (selector) => document.querySelector(selector);

// ---- wire format (latcomp/studio/wire.py) ----

function pack(header, parts = []) {
  const text = new TextEncoder().encode(JSON.stringify({ ...header, parts: parts.map((p) => p.byteLength) }));
  const out = new Uint8Array(4 + text.length + parts.reduce((n, p) => n + p.byteLength, 0));
  new DataView(out.buffer).setUint32(0, text.length, true);
  out.set(text, 4);
  let offset = 4 + text.length;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.byteLength;
  }
  return out;
}

function unpack(buffer) {
  const length = new DataView(buffer).getUint32(0, true);
  const header = JSON.parse(new TextDecoder().decode(new Uint8Array(buffer, 4, length)));
  let offset = 4 + length;
  const parts = header.parts.map((size) => {
    const part = new Uint8Array(buffer, offset, size);
    offset += size;
    return part;
  });
  return [header, parts];
}

// ---- pixels ----

function canvasOf(width, height) {
  const canvas = document.createElement("canvas");
  canvas.width = width;
  canvas.height = height;
  return canvas;
}

function rgbToImageData(rgb, width, height) {
  const data = new ImageData(width, height);
  for (let i = 0, j = 0; i < rgb.length; i += 3, j += 4) {
    data.data[j] = rgb[i];
    data.data[j + 1] = rgb[i + 1];
    data.data[j + 2] = rgb[i + 2];
    data.data[j + 3] = 255;
  }
  return data;
}

function alphaToImageData(alpha, width, height) {
  const data = new ImageData(width, height);
  for (let i = 0; i < alpha.length; i++) {
    data.data[4 * i] = data.data[4 * i + 1] = data.data[4 * i + 2] = 255;
    data.data[4 * i + 3] = alpha[i];
  }
  return data;
}

function download(canvas, name) {
  canvas.toBlob((blob) => {
    const link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    link.download = name;
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 10000);
  }, "image/png");
}

const median = (values) => {
  if (!values.length) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
};

// ---- state ----

const state = {
  socket: null,
  ready: false,
  info: null,
  layers: [], // bottom first
  selected: null,
  tool: "move",
  size: 256,
  realism: 0,
  preserve: false,
  seq: 0,
  inFlight: null, // {seq, sent, inputs}
  dirty: false,
  inputs: [], // performance.now() of the input events not yet sent
  waiting: new Map(), // request kind -> [resolve] for replies other than results
  nextId: 1,
};

// Latencies of the last edits: input event -> result drawn, and edit sent -> result drawn (ms).
const stats = { inputToDisplay: [], roundTrip: [], server: [], compute: [], results: 0, dropped: 0, errors: [] };

class Layer {
  constructor(id, header, rgb, alpha) {
    this.id = id;
    this.origin = header.origin;
    this.width = header.width;
    this.height = header.height;
    this.image = canvasOf(this.width, this.height);
    this.image.getContext("2d").putImageData(rgbToImageData(rgb, this.width, this.height), 0, 0);
    this.mask = canvasOf(this.width, this.height);
    this.maskContext = this.mask.getContext("2d", { willReadFrequently: true });
    this.maskContext.putImageData(alphaToImageData(alpha, this.width, this.height), 0, 0);
    this.view = canvasOf(this.width, this.height); // image where the mask is painted
    this.maskVersion = 1;
    this.sentVersion = 0; // 0: the server has no mask of ours yet (or lost track): send it whole
    this.dirty = null; // [x0, y0, x1, y1] in source pixels painted since the last edit
    // where it sits, in fractions of the canvas side: top-left corner and width
    this.fx = 0;
    this.fy = 0;
    this.fw = 1;
    this.refreshView();
  }

  get name() {
    const [kind, value] = Object.entries(this.origin)[0];
    return kind === "file" ? value || "image" : `${kind} ${value}`;
  }

  refreshView() {
    const context = this.view.getContext("2d");
    context.globalCompositeOperation = "copy";
    context.drawImage(this.image, 0, 0);
    context.globalCompositeOperation = "destination-in";
    context.drawImage(this.mask, 0, 0);
  }

  clearMask() {
    this.maskContext.clearRect(0, 0, this.width, this.height);
    this.maskChanged();
  }

  // rect: the source pixels that changed, [x0, y0, x1, y1]; none: all of them
  maskChanged(rect = [0, 0, this.width, this.height]) {
    const d = this.dirty || rect;
    this.dirty = [Math.min(d[0], rect[0]), Math.min(d[1], rect[1]), Math.max(d[2], rect[2]), Math.max(d[3], rect[3])];
    this.maskVersion++;
    this.refreshView();
  }

  // The painted rectangle in whole source pixels, inside the layer: [x, y, width, height].
  dirtyRect() {
    const x = Math.min(this.width - 1, Math.max(0, Math.floor(this.dirty[0])));
    const y = Math.min(this.height - 1, Math.max(0, Math.floor(this.dirty[1])));
    const right = Math.min(this.width, Math.max(x + 1, Math.ceil(this.dirty[2])));
    const bottom = Math.min(this.height, Math.max(y + 1, Math.ceil(this.dirty[3])));
    return [x, y, right - x, bottom - y];
  }

  maskBytes(x = 0, y = 0, width = this.width, height = this.height) {
    const rgba = this.maskContext.getImageData(x, y, width, height).data;
    const alpha = new Uint8Array(width * height);
    for (let i = 0; i < alpha.length; i++) alpha[i] = rgba[4 * i + 3];
    return alpha;
  }

  // Integer placement on a canvas of `side` pixels (what the server pastes).
  placement(side) {
    const width = Math.max(1, Math.round(this.fw * side));
    const height = Math.max(1, Math.round((this.fw * this.height / this.width) * side));
    return { x: Math.round(this.fx * side), y: Math.round(this.fy * side), width, height };
  }

  contains(u, v) {
    const h = this.fw * this.height / this.width;
    return u >= this.fx && u < this.fx + this.fw && v >= this.fy && v < this.fy + h;
  }

  // Canvas fractions -> this layer's source pixel.
  toSource(u, v) {
    const k = this.width / this.fw;
    return [(u - this.fx) * k, (v - this.fy) * k];
  }
}

// ---- the socket ----

function token() {
  const match = location.hash.match(/token=([^&]+)/);
  if (match) {
    sessionStorage.setItem("latcomp-token", decodeURIComponent(match[1]));
    history.replaceState(null, "", location.pathname + location.search);
  }
  return sessionStorage.getItem("latcomp-token");
}

function setStatus(text) {
  $("#status").textContent = text;
}

function connect() {
  const socket = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`);
  socket.binaryType = "arraybuffer";
  state.socket = socket;
  socket.onopen = () => socket.send(JSON.stringify({ type: "hello", token: token() }));
  socket.onmessage = (event) => {
    const [header, parts] = typeof event.data === "string" ? [JSON.parse(event.data), []] : unpack(event.data);
    receive(header, parts);
  };
  socket.onclose = (event) => {
    state.ready = false;
    if (event.code === 4401) {
      const given = prompt("This studio needs its access token:");
      if (given) {
        sessionStorage.setItem("latcomp-token", given.trim());
        connect();
        return;
      }
    }
    setStatus(`disconnected (${event.reason || event.code}): reload the page to reconnect`);
  };
}

function request(header, parts = []) {
  return new Promise((resolve, reject) => {
    const queue = state.waiting.get(header.type) || [];
    queue.push({ resolve, reject });
    state.waiting.set(header.type, queue);
    state.socket.send(parts.length ? pack(header, parts) : JSON.stringify(header));
  });
}

function settle(kind, outcome, value) {
  const queue = state.waiting.get(kind);
  const waiter = queue && queue.shift();
  if (waiter) waiter[outcome](value);
}

function receive(header, parts) {
  switch (header.type) {
    case "info":
      start(header);
      break;
    case "result":
      showResult(header, parts[0]);
      break;
    case "layer":
      settle(Object.keys(header.origin)[0], "resolve", [header, parts]); // face, sample or file
      break;
    case "collage":
      settle("collage", "resolve", [header, parts]);
      break;
    case "removed":
      settle("remove", "resolve", header);
      break;
    case "error":
      stats.errors.push(header.message);
      setStatus(header.message);
      if (header.request === "edit") {
        for (const layer of state.layers) layer.sentVersion = 0; // resend every mask with the next edit
        state.inFlight = null;
        if (header.busy) state.dirty = true;
        setTimeout(pump, header.busy ? 50 : 0);
      } else {
        settle(header.request, "reject", new Error(header.message));
      }
      break;
  }
}

function start(info) {
  state.info = info;
  state.ready = true;
  const model = info.model;
  $("#model").textContent = `${model.name} ${model.version} · ${model.resolution}px model · ${model.backend} on ${model.device}`;
  const select = $("#size");
  select.replaceChildren(
    ...info.sizes.map((side) => new Option(side === model.resolution ? `${side} px (model)` : `${side} px`, side)),
  );
  select.value = info.sizes.includes(256) ? 256 : info.sizes.at(-1);
  state.size = Number(select.value);
  setStatus("");
  layoutCanvases();
}

// ---- edits, latest wins ----

function changed(inputTime) {
  if (inputTime !== undefined) state.inputs.push(inputTime);
  state.dirty = true;
  pump();
}

function pump() {
  if (state.inFlight || !state.dirty || !state.ready) return;
  if (!state.layers.length) {
    state.dirty = false;
    return;
  }
  state.dirty = false;
  const masks = [];
  const layers = state.layers.map((layer) => {
    const placement = { id: layer.id, ...layer.placement(state.size) };
    if (layer.sentVersion !== layer.maskVersion) {
      // the whole mask the first time (or after an error), else only the rectangle painted since
      placement.mask = masks.length;
      if (layer.sentVersion && layer.dirty) {
        placement.mask_rect = layer.dirtyRect();
        masks.push(layer.maskBytes(...placement.mask_rect));
      } else {
        masks.push(layer.maskBytes());
      }
      layer.sentVersion = layer.maskVersion;
      layer.dirty = null;
    }
    return placement;
  });
  const edit = { type: "edit", seq: ++state.seq, size: state.size, realism: state.realism, preserve_known: state.preserve, layers };
  studio.lastEdit = edit;
  stats.dropped += Math.max(0, state.inputs.length - 1);
  state.inFlight = { seq: edit.seq, sent: performance.now(), inputs: state.inputs };
  state.inputs = [];
  state.socket.send(pack(edit, masks));
}

function showResult(header, rgb) {
  const canvas = $("#result");
  if (canvas.width !== header.width || canvas.height !== header.height) {
    canvas.width = header.width;
    canvas.height = header.height;
  }
  canvas.getContext("2d").putImageData(rgbToImageData(rgb, header.width, header.height), 0, 0);
  const now = performance.now();
  const flight = state.inFlight;
  state.inFlight = null;
  if (flight) {
    keep(stats.roundTrip, now - flight.sent);
    for (const time of flight.inputs) keep(stats.inputToDisplay, now - time);
  }
  keep(stats.server, header.timing.server_ms);
  keep(stats.compute, header.timing.compute_ms);
  stats.results++;
  studio.lastResult = { seq: header.seq, width: header.width, height: header.height };
  const last = flight ? (now - flight.sent).toFixed(0) : "–";
  $("#timing").textContent = `${last} ms round trip · p50 ${median(stats.roundTrip.slice(-50)).toFixed(0)} ms · engine ${header.timing.compute_ms.toFixed(0)} ms`;
  pump();
}

function keep(list, value) {
  list.push(value);
  if (list.length > 5000) list.shift();
}

// ---- drawing the collage view ----

const collage = $("#collage");

function layoutCanvases() {
  const ratio = window.devicePixelRatio || 1;
  const side = Math.round(collage.getBoundingClientRect().width * ratio);
  if (side > 0 && collage.width !== side) {
    collage.width = collage.height = side;
  }
  draw();
}

let pointerAt = null; // canvas fractions of the last pointer position, for the brush outline

function draw() {
  const context = collage.getContext("2d");
  const side = collage.width;
  context.clearRect(0, 0, side, side);
  context.imageSmoothingQuality = "high";
  for (const layer of state.layers) {
    const box = [layer.fx * side, layer.fy * side, layer.fw * side, (layer.fw * layer.height / layer.width) * side];
    if (layer === state.selected && pointerAt && state.tool !== "move") {
      // while painting, the selected layer's whole image shows faintly: where its parts would go
      context.globalAlpha = 0.3;
      context.drawImage(layer.image, ...box);
      context.globalAlpha = 1;
    }
    context.drawImage(layer.view, ...box);
  }
  const selected = state.selected;
  if (selected) {
    context.save();
    context.strokeStyle = "#4fa3ff";
    context.setLineDash([6, 4]);
    context.lineWidth = Math.max(1, side / 400);
    context.strokeRect(selected.fx * side, selected.fy * side, selected.fw * side, (selected.fw * selected.height / selected.width) * side);
    context.restore();
  }
  if (pointerAt && state.tool !== "move") {
    context.beginPath();
    context.arc(pointerAt[0] * side, pointerAt[1] * side, brushRadius() * side, 0, 2 * Math.PI);
    context.strokeStyle = state.tool === "brush" ? "#ffffffcc" : "#ff6b6bcc";
    context.lineWidth = Math.max(1, side / 400);
    context.stroke();
  }
}

let drawQueued = false;
function redraw() {
  if (drawQueued) return;
  drawQueued = true;
  requestAnimationFrame(() => {
    drawQueued = false;
    draw();
  });
}

// ---- pointer input: move and scale layers, paint masks (mouse, pen and touch alike) ----

const pointers = new Map(); // pointerId -> last canvas fractions
let gesture = null;

function fractions(event) {
  const box = collage.getBoundingClientRect();
  return [(event.clientX - box.left) / box.width, (event.clientY - box.top) / box.height];
}

function brushRadius() {
  // the slider is in screen pixels; as a fraction of the canvas side
  return Number($("#brush").value) / 2 / collage.getBoundingClientRect().width;
}

function layerAt(u, v) {
  if (state.selected && state.selected.contains(u, v)) return state.selected;
  for (let i = state.layers.length - 1; i >= 0; i--) {
    if (state.layers[i].contains(u, v)) return state.layers[i];
  }
  return null;
}

function paint(layer, from, to) {
  const [x0, y0] = layer.toSource(...from);
  const [x1, y1] = layer.toSource(...to);
  const context = layer.maskContext;
  context.save();
  context.globalCompositeOperation = state.tool === "eraser" ? "destination-out" : "source-over";
  context.strokeStyle = context.fillStyle = "#fff";
  context.lineCap = "round";
  const width = 2 * brushRadius() * (layer.width / layer.fw);
  context.lineWidth = width;
  context.beginPath();
  context.moveTo(x0, y0);
  context.lineTo(x1, y1);
  context.stroke();
  context.restore();
  const reach = width / 2 + 2; // the round cap, and antialiasing
  layer.maskChanged([Math.min(x0, x1) - reach, Math.min(y0, y1) - reach, Math.max(x0, x1) + reach, Math.max(y0, y1) + reach]);
}

collage.addEventListener("pointerdown", (event) => {
  const time = performance.now();
  collage.setPointerCapture(event.pointerId);
  const at = fractions(event);
  pointers.set(event.pointerId, at);
  if (pointers.size === 2 && state.selected) {
    const [a, b] = [...pointers.values()];
    gesture = { kind: "pinch", distance: Math.hypot(a[0] - b[0], a[1] - b[1]), layer: state.selected };
    return;
  }
  if (state.tool === "move") {
    const layer = layerAt(...at);
    if (layer) select(layer);
    gesture = layer ? { kind: "drag", layer } : null;
    return;
  }
  if (state.selected) {
    gesture = { kind: "paint", layer: state.selected };
    paint(state.selected, at, at);
    redraw();
    changed(time);
  }
});

collage.addEventListener("pointermove", (event) => {
  const time = performance.now();
  const at = fractions(event);
  pointerAt = at;
  const last = pointers.get(event.pointerId);
  if (!last || !gesture) {
    if (state.tool !== "move") redraw();
    return;
  }
  pointers.set(event.pointerId, at);
  const layer = gesture.layer;
  if (gesture.kind === "pinch" && pointers.size === 2) {
    const [a, b] = [...pointers.values()];
    const distance = Math.hypot(a[0] - b[0], a[1] - b[1]);
    scaleLayer(layer, distance / gesture.distance, (a[0] + b[0]) / 2, (a[1] + b[1]) / 2);
    gesture.distance = distance;
  } else if (gesture.kind === "drag") {
    layer.fx = clampOffset(layer.fx + at[0] - last[0]);
    layer.fy = clampOffset(layer.fy + at[1] - last[1]);
  } else if (gesture.kind === "paint") {
    paint(layer, last, at);
  } else {
    return;
  }
  redraw();
  changed(time);
});

function endPointer(event) {
  pointers.delete(event.pointerId);
  if (!pointers.size) gesture = null;
}
collage.addEventListener("pointerup", endPointer);
collage.addEventListener("pointercancel", endPointer);
collage.addEventListener("pointerleave", () => {
  pointerAt = null;
  redraw();
});

collage.addEventListener("wheel", (event) => {
  if (!state.selected) return;
  event.preventDefault();
  const [u, v] = fractions(event);
  scaleLayer(state.selected, Math.exp(-event.deltaY / 500), u, v);
  redraw();
  changed(performance.now());
}, { passive: false });

// The server takes layers at most MAX_SCALE canvas sides large and as far off the canvas (session.py).
const MAX_SCALE = 3;
const clampOffset = (value) => Math.min(MAX_SCALE - 0.01, Math.max(-MAX_SCALE + 0.01, value));

function scaleLayer(layer, factor, u, v) {
  const largest = MAX_SCALE * Math.min(1, layer.width / layer.height) - 0.01;
  const fw = Math.min(largest, Math.max(0.05, layer.fw * factor));
  const applied = fw / layer.fw;
  layer.fx = clampOffset(u - (u - layer.fx) * applied);
  layer.fy = clampOffset(v - (v - layer.fy) * applied);
  layer.fw = fw;
  showScale();
}

// ---- layers ----

function select(layer) {
  state.selected = layer;
  showScale();
  renderLayerList();
  redraw();
}

function showScale() {
  const value = state.selected ? Math.round(state.selected.fw * 100) : 100;
  $("#scale").value = value;
  $("#scale").nextElementSibling.textContent = `${value}%`;
  $("#scale").disabled = !state.selected;
}

async function addLayer(kind, header, parts = []) {
  if (!state.ready) return null;
  const id = `layer${state.nextId++}`;
  setStatus(`adding ${kind}…`);
  try {
    const [reply, pixels] = await request({ type: kind, id, ...header }, parts);
    const layer = new Layer(id, reply, pixels[0], pixels[1]);
    const opaque = !pixels[1].some((value) => value < 255);
    if (state.layers.length && opaque) {
      // Later layers start with nothing: paint the parts they lend (their image shows faintly).
      layer.clearMask();
      setTool("brush");
      $("#hint").textContent = "· paint with the brush to bring in parts of the selected layer";
    }
    if (reply.height > reply.width) {
      layer.fw = reply.width / reply.height;
      layer.fx = (1 - layer.fw) / 2;
    }
    state.layers.push(layer);
    select(layer);
    setStatus("");
    changed(performance.now());
    return layer;
  } catch (error) {
    setStatus(`${kind}: ${error.message}`);
    return null;
  }
}

async function removeLayer(layer) {
  await request({ type: "remove", id: layer.id }).catch(() => {});
  state.layers = state.layers.filter((other) => other !== layer);
  if (state.selected === layer) state.selected = state.layers.at(-1) || null;
  if (!state.layers.length) {
    const result = $("#result");
    result.getContext("2d").clearRect(0, 0, result.width, result.height);
  }
  select(state.selected);
  changed();
}

function moveLayer(layer, step) {
  const index = state.layers.indexOf(layer);
  const to = index + step;
  if (to < 0 || to >= state.layers.length) return;
  state.layers.splice(index, 1);
  state.layers.splice(to, 0, layer);
  renderLayerList();
  redraw();
  changed();
}

function renderLayerList() {
  const list = $("#layers");
  list.replaceChildren(
    ...[...state.layers].reverse().map((layer) => {
      const item = document.createElement("li");
      item.className = layer === state.selected ? "selected" : "";
      item.dataset.id = layer.id;
      const thumb = canvasOf(72, 72);
      thumb.getContext("2d").drawImage(layer.image, 0, 0, 72, 72);
      const name = document.createElement("span");
      name.textContent = layer.name;
      const button = (text, title, action) => {
        const b = document.createElement("button");
        b.type = "button";
        b.textContent = text;
        b.title = title;
        b.addEventListener("click", (event) => {
          event.stopPropagation();
          action();
        });
        return b;
      };
      item.append(
        thumb,
        name,
        button("↑", "bring forward", () => moveLayer(layer, 1)),
        button("↓", "send backward", () => moveLayer(layer, -1)),
        button("✕", "remove", () => removeLayer(layer)),
      );
      item.addEventListener("click", () => select(layer));
      return item;
    }),
  );
}

function randomSeed() {
  return crypto.getRandomValues(new Uint32Array(1))[0];
}

async function openFiles(files) {
  for (const file of files) {
    if (!file.type.startsWith("image/")) continue;
    const bytes = new Uint8Array(await file.arrayBuffer());
    await addLayer("file", { name: file.name }, [bytes]);
  }
}

// ---- controls ----

function setTool(tool) {
  state.tool = tool;
  document.querySelector(`input[name=tool][value=${tool}]`).checked = true;
  collage.classList.toggle("paint", tool !== "move");
  redraw();
}

function bindSlider(id, apply) {
  const input = $(id);
  const output = input.nextElementSibling;
  const update = () => {
    output.textContent = input.value;
    apply(Number(input.value));
  };
  input.addEventListener("input", update);
  output.textContent = input.value;
}

$("#face").addEventListener("click", () => addLayer("face", { seed: randomSeed() }));
$("#sample").addEventListener("click", () => addLayer("sample", { seed: randomSeed(), truncation: 0.7 }));
$("#open").addEventListener("change", (event) => openFiles(event.target.files).then(() => (event.target.value = "")));
for (const radio of document.querySelectorAll("input[name=tool]")) {
  radio.addEventListener("change", () => setTool(radio.value));
}
bindSlider("#brush", () => redraw());
bindSlider("#realism", (value) => {
  state.realism = value;
  changed(performance.now());
});
$("#scale").addEventListener("input", () => {
  const layer = state.selected;
  if (!layer) return;
  const height = layer.fw * layer.height / layer.width;
  scaleLayer(layer, Number($("#scale").value) / 100 / layer.fw, layer.fx + layer.fw / 2, layer.fy + height / 2);
  redraw();
  changed(performance.now());
});
$("#preserve").addEventListener("change", (event) => {
  state.preserve = event.target.checked;
  changed(performance.now());
});
$("#size").addEventListener("change", (event) => {
  state.size = Number(event.target.value);
  changed(performance.now());
});
$("#download-result").addEventListener("click", () => {
  if (studio.lastResult) download($("#result"), "latcomp-result.png");
});
$("#download-collage").addEventListener("click", async () => {
  try {
    const [header, parts] = await request({ type: "collage" });
    const canvas = canvasOf(header.width, header.height);
    canvas.getContext("2d").putImageData(new ImageData(new Uint8ClampedArray(parts[0]), header.width, header.height), 0, 0);
    download(canvas, "latcomp-collage.png");
  } catch (error) {
    setStatus(error.message);
  }
});
document.addEventListener("keydown", (event) => {
  if (event.target.matches("input, select")) return;
  const keys = { v: "move", b: "brush", e: "eraser" };
  if (keys[event.key]) setTool(keys[event.key]);
  if ((event.key === "Delete" || event.key === "Backspace") && state.selected) removeLayer(state.selected);
});
document.addEventListener("dragover", (event) => {
  event.preventDefault();
  document.body.classList.add("dropping");
});
document.addEventListener("dragleave", () => document.body.classList.remove("dropping"));
document.addEventListener("drop", (event) => {
  event.preventDefault();
  document.body.classList.remove("dropping");
  openFiles(event.dataTransfer.files);
});
window.addEventListener("resize", layoutCanvases);

// What tests and the latency benchmark use: the state, the timings, and adding a face of a known seed.
const studio = {
  addFace: (seed) => addLayer("face", { seed }),
  select: (index) => select(state.layers[index]),
  resetStats: () => {
    for (const list of [stats.inputToDisplay, stats.roundTrip, stats.server, stats.compute]) list.length = 0;
  },
  state,
  stats,
  lastEdit: null,
  lastResult: null,
  idle: () => state.ready && !state.inFlight && !state.dirty && [...state.waiting.values()].every((q) => !q.length),
  maskBase64: (id) => {
    const layer = state.layers.find((l) => l.id === id);
    let text = "";
    for (const byte of layer.maskBytes()) text += String.fromCharCode(byte);
    return btoa(text);
  },
  resultBase64: () => {
    const canvas = $("#result");
    const rgba = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
    let text = "";
    for (let i = 0; i < rgba.length; i += 4) text += String.fromCharCode(rgba[i], rgba[i + 1], rgba[i + 2]);
    return btoa(text);
  },
  median,
};
window.studio = studio;

setTool("move");
showScale();
connect();
