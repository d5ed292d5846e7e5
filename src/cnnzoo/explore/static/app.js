// cnnzoo explore: the page. Plain DOM, nothing from the network but this server's API.
// Every name (class, layer, file) is set with textContent, never as HTML.

const $ = (id) => document.getElementById(id);
const state = { model: null, image: null, graph: null, layer: null, session: null,
                generation: 0 };

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "text") node.textContent = value;
    else if (key === "class") node.className = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function query(params) {
  return new URLSearchParams({ model: state.model, image: state.image, ...params }).toString();
}

async function api(path, params = {}) {
  const response = await fetch(`/api/${path}?${query(params)}`);
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

function fmt(v) {
  if (v === null || v === undefined) return "pad";
  if (typeof v !== "number") return String(v);
  if (v === 0) return "0";
  const a = Math.abs(v);
  return a >= 1e4 || a < 1e-3 ? v.toExponential(3) : v.toFixed(4);
}

function count(n) {
  if (n >= 1e9) return (n / 1e9).toFixed(2) + " G";
  if (n >= 1e6) return (n / 1e6).toFixed(2) + " M";
  if (n >= 1e3) return (n / 1e3).toFixed(1) + " k";
  return String(n);
}

function say(text, error = false) {
  $("message").textContent = text;
  $("message").className = error ? "error" : "";
}

function png(name, params) {
  return `/api/${name}.png?${query(params)}`;
}

// --- session ---------------------------------------------------------------------------------

async function loadSession(selectImage) {
  const response = await fetch("/api/session");
  state.session = await response.json();
  const models = $("model");
  models.replaceChildren(
    ...state.session.models.map((m) => el("option", { value: m.key, text: m.label })),
  );
  if (!state.model) state.model = state.session.models[0].key;
  models.value = state.model;
  const images = $("image");
  images.replaceChildren(
    ...state.session.images.map((i) => el("option", { value: i.key, text: i.name })),
  );
  state.image = selectImage || state.image || state.session.images.at(-1).key;
  images.value = state.image;
}

async function showAll() {
  const model = state.session.models.find((m) => m.key === state.model);
  $("model-note").textContent = model.note ? `Note: ${model.note}.` : "";
  $("prep").textContent = `What was done to the image: ${model.preprocessing}.`;
  $("input").src = png("input", {});
  $("filters").src = png("filters", {});
  $("layer-panel").hidden = true;
  $("neuron-panel").hidden = true;
  $("rf").style.display = "none";
  say("computing every layer…");
  // A later choice (another model or image) wins: answers to an earlier one are dropped.
  const mine = ++state.generation;
  try {
    const graph = await api("graph");
    if (mine !== state.generation) return;
    state.graph = graph;
    drawOverview();
    const answer = await api("topk", { k: 5 });
    if (mine !== state.generation) return;
    drawAnswer(answer);
    const notes = state.session.notes.join("; ");
    say(notes ? `Ready. Note: ${notes}.` : "Ready: click a layer, then a cell of a map.");
  } catch (err) {
    say(err.message, true);
  }
}

// --- overview --------------------------------------------------------------------------------

function drawOverview() {
  const g = state.graph;
  $("totals").textContent =
    `${g.label}: input ${g.input_size.join("×")}, ${count(g.params)} parameters, ` +
    `${count(g.macs)} MACs, ${g.layers} layers`;
  // Units whose forward adds their input to their output with no layer on the way (the
  // first pass saw the sum): nothing in the rows shows that shortcut, so it is labelled.
  const identity = new Map(g.shortcuts.filter((s) => !s.module).map((s) => [s.unit, s]));
  const blocks = g.blocks.map((block) => {
    const card = (layer) => {
      const shape = layer.output_shape.slice(1).join("×");
      const rf = layer.rf_size ? `RF ${layer.rf_size.join("×")}` : "";
      const thumbs = el("div", { class: "thumbs" });
      for (const c of layer.top_channels || []) {
        thumbs.append(el("img", { src: png("channel", { layer: layer.index, channel: c }),
                                  alt: `channel ${c}`, title: `channel ${c}` }));
      }
      const node = el(
        "div", { class: "layer", id: `layer-${layer.index}`, "data-index": layer.index },
        el("div", { class: "name", text: layer.name }),
        el("div", { text: `${layer.type} → ${shape}` }),
        el("div", { text: `${count(layer.params)} params, ${count(layer.macs)} MACs` }),
        el("div", { text: rf }),
        thumbs,
      );
      node.addEventListener("click", () => showLayer(layer.index, 0));
      return node;
    };
    const items = structure(block.layers, identity).map((item) => {
      if (!item.paths) return card(item);
      const rows = [...item.paths].map(([path, layers]) => el("div", { class: "path" },
        el("div", { class: "path-label", text: pathLabel(item.unit, path, item.residual) }),
        el("div", { class: "layers" }, ...layers.map(card))));
      const kind = item.dense ? " dense" : item.residual ? " residual" : "";
      return el("div", { class: `parallel${kind}` }, ...rows);
    });
    return el("div", { class: "block" }, el("h3", { text: block.name }),
              el("div", { class: "layers" }, ...items));
  });
  $("overview").replaceChildren(...blocks);
}

// The analyzer lists layers in execution order; the module names tell the structure: an
// inception block's `branchN` paths read the same input and are concatenated, a residual
// unit's `downsample`/`shortcut` is added to its output. Such paths are drawn as rows stacked
// in one column (side by side in the flow), the other layers one after the other.
function structure(layers, identity) {
  const items = [];
  for (const layer of layers) {
    const parts = layer.name.split(".");
    const dense = parts.findIndex((p) => /^denselayer\d+$/.test(p));
    if (dense >= 0) {  // a dense layer: one path of its own, concatenated to its input after
      const unit = parts.slice(0, dense + 1).join(".");
      const last = items.at(-1);
      if (last && last.unit === unit) last.paths.get("dense").push(layer);
      else items.push({ unit, dense: true, paths: new Map([["dense", [layer]]]) });
      continue;
    }
    const at = parts.findIndex((p) => /^branch\d+$/.test(p) || p === "downsample" ||
                                      p === "shortcut");
    if (at < 0) {
      const unit = unitOf(layer.name, identity);
      const last = items.at(-1);
      if (unit === null) items.push(layer);
      else if (last && last.unit === unit && last.residual) last.paths.get("residual").push(layer);
      else items.push({ unit, residual: identity.get(unit), paths: new Map([["residual", [layer]]]) });
      continue;
    }
    const unit = parts.slice(0, at).join(".");
    const path = parts[at];
    const last = items.at(-1);
    const group = last && last.unit === unit ? last : { unit, paths: new Map() };
    if (group !== last) items.push(group);
    if (!group.paths.has(path)) group.paths.set(path, []);
    group.paths.get(path).push(layer);
  }
  return items;
}

// The longest unit of `units` whose layers include `name`, or null.
function unitOf(name, units) {
  let best = null;
  for (const unit of units.keys()) {
    if (name.startsWith(`${unit}.`) && (best === null || unit.length > best.length)) best = unit;
  }
  return best;
}

function pathLabel(unit, path, residual) {
  if (residual) {
    const how = residual.padded ? "x subsampled by the stride, its new channels zero-padded " +
      "(option A)" : "x as it is (identity)";
    return `${unit}: output = F(x) + x, a shortcut without a layer: ${how}, added to ` +
      "these layers' result";
  }
  if (path === "dense") {
    return `${unit}: its output is concatenated to its input (every earlier layer's, in the block)`;
  }
  if (path.startsWith("branch")) {
    return `${unit}.${path}: a parallel path on ${unit}'s input, concatenated after`;
  }
  return `${unit}.${path}: the shortcut, added to ${unit}'s output`;
}

// --- a layer ---------------------------------------------------------------------------------

async function showLayer(index, page) {
  document.querySelectorAll(".layer.selected").forEach((n) => n.classList.remove("selected"));
  $(`layer-${index}`)?.classList.add("selected");
  try {
    const layer = await api("layer", { layer: index, page });
    state.layer = layer;
    $("layer-panel").hidden = false;
    $("layer-title").textContent =
      `${layer.name} (${layer.type}): output ${layer.shape.join("×")}`;
    $("layer-scale").textContent = `Colours: ${layer.scale.text} (${layer.scale.colormap}).`;
    const pager = $("pager");
    pager.replaceChildren();
    if (layer.pages > 1) {
      pager.append(`channels ${page * 64}–${Math.min(layer.channels, (page + 1) * 64) - 1} ` +
                   `of ${layer.channels}: `);
      for (let p = 0; p < layer.pages; p++) {
        const b = el("button", { text: String(p + 1) });
        if (p === page) b.disabled = true;
        b.addEventListener("click", () => showLayer(index, p));
        pager.append(b);
      }
    }
    const vector = layer.shape.length === 1;
    const cells = layer.cells.map((cell) => {
      const img = el("img", {
        src: png("channel", { layer: index, channel: cell.channel }),
        alt: `channel ${cell.channel}`, "data-channel": cell.channel,
        class: vector ? "wide" : "",
      });
      img.addEventListener("click", (event) => {
        const rect = img.getBoundingClientRect();
        if (vector) {
          const unit = Math.floor(((event.clientX - rect.left) / rect.width) * layer.shape[0]);
          showNeuron(index, Math.min(unit, layer.shape[0] - 1), 0, 0);
          return;
        }
        const [, h, w] = layer.shape;
        const y = Math.min(h - 1, Math.floor(((event.clientY - rect.top) / rect.height) * h));
        const x = Math.min(w - 1, Math.floor(((event.clientX - rect.left) / rect.width) * w));
        showNeuron(index, cell.channel, y, x);
      });
      const label = vector ? `${layer.shape[0]} units` : `channel ${cell.channel}`;
      return el("div", { class: "cell" }, img, el("div", { text: label }),
                el("div", { text: `${fmt(cell.min)} … ${fmt(cell.max)}` }));
    });
    $("grid").replaceChildren(...cells);
    $("layer-panel").scrollIntoView({ block: "nearest" });
  } catch (err) {
    say(err.message, true);
  }
}

// --- a neuron --------------------------------------------------------------------------------

function numbers(grid, caption, kept) {
  const table = el("table", { class: "grid-nums" }, el("caption", { text: caption }));
  grid.forEach((row, i) => {
    const tr = el("tr");
    row.forEach((v, j) => {
      const td = el("td", { text: fmt(v) });
      if (kept && kept[0] === i && kept[1] === j) td.className = "kept";
      tr.append(td);
    });
    table.append(tr);
  });
  return table;
}

function line(text, cls = "result") {
  return el("p", { class: cls, text });
}

// The input channel a window reads, with the window drawn on it (a box over the map).
function boxed(layer, inputChannel, d, size) {
  const [h, w] = d.input_size;
  const img = el("img", { class: "input-map", alt: `input channel ${inputChannel}`,
                          src: png("input_channel", { layer, channel: inputChannel }) });
  img.style.width = `${size}px`;
  img.style.height = `${(size * h) / w}px`;
  const box = el("div", { class: "window-box" });
  const place = (oy, ox) => {
    const top = oy * d.stride[0] - d.padding[0];
    const left = ox * d.stride[1] - d.padding[1];
    const eh = d.dilation[0] * (d.kernel_size[0] - 1) + 1;
    const ew = d.dilation[1] * (d.kernel_size[1] - 1) + 1;
    Object.assign(box.style, { top: `${(top / h) * size * h / w}px`, left: `${(left / w) * size}px`,
      height: `${(eh / h) * size * h / w}px`, width: `${(ew / w) * size}px` });
  };
  return { node: el("div", { class: "boxed" }, img, box), place };
}

function windowOn(layer, inputChannel, d) {
  const view = boxed(layer, inputChannel, d, 96);
  const oy = (d.rows[0] + d.padding[0]) / d.stride[0];
  const ox = (d.cols[0] + d.padding[1]) / d.stride[1];
  view.place(oy, ox);
  return el("div", { class: "note" }, view.node, `input channel ${inputChannel}`);
}

// The kernel sliding over an input channel, the output map filling in, as in CNN Explainer.
function slider(layer, d, inputChannel, outChannel, [y, x]) {
  const view = boxed(layer, inputChannel, d, 200);
  const [, oh, ow] = state.layer.shape;
  const out = el("img", { class: "input-map", alt: `output channel ${outChannel}`,
                          src: png("channel", { layer, channel: outChannel }) });
  Object.assign(out.style, { width: "200px", height: `${(200 * oh) / ow}px` });
  const cell = el("div", { class: "window-box out-cell" });
  const mark = (oy, ox) => Object.assign(cell.style, {
    top: `${(oy / oh) * 200 * oh / ow}px`, left: `${(ox / ow) * 200}px`,
    height: `${(1 / oh) * 200 * oh / ow}px`, width: `${(1 / ow) * 200}px` });
  const show = (oy, ox) => { view.place(oy, ox); mark(oy, ox); };
  show(y, x);
  const button = el("button", { text: "▶ slide the window" });
  let timer = null;
  button.addEventListener("click", () => {
    if (timer) { clearInterval(timer); timer = null; show(y, x); return; }
    const step = Math.max(1, Math.ceil(Math.sqrt((oh * ow) / 150)));
    let i = 0;
    timer = setInterval(() => {
      const oy = Math.floor(i / Math.ceil(ow / step)) * step;
      const ox = (i % Math.ceil(ow / step)) * step;
      if (oy >= oh) { clearInterval(timer); timer = null; show(y, x); return; }
      show(oy, ox);
      i += 1;
    }, 80);
  });
  return el("div", { class: "slider" },
    el("div", { class: "note" }, view.node, `input channel ${inputChannel} (window in magenta)`),
    el("div", { class: "note" }, el("div", { class: "boxed" }, out, cell),
       `output channel ${outChannel} (this value in magenta)`),
    button);
}

async function showNeuron(index, channel, y, x) {
  try {
    const d = await api("neuron", { layer: index, channel, y, x });
    $("neuron-panel").hidden = false;
    const where = state.layer.shape.length === 1 ? `unit ${channel}` :
      `channel ${channel}, row ${y}, column ${x}`;
    $("neuron-title").textContent = `${d.name} (${d.type}), ${where}`;
    const out = [];
    if (d.kind === "conv" && d.channels) {
      out.push(line(`${d.formula}; stride ${d.stride.join("×")}, padding ` +
        `${d.padding.join("×")}, dilation ${d.dilation.join("×")}, groups ${d.groups}.`, "note"));
      out.push(line(`The kernel reads input rows ${d.rows.join(", ")} and columns ` +
        `${d.cols.join(", ")} of the previous layer (outside the map: zero padding).`, "note"));
      const many = d.in_channels > d.channels_shown;
      if (many) {
        out.push(line(`${d.in_channels} input channels; the ${d.channels_shown} with the ` +
          "largest sums are shown, every channel's sum is added:", "note"));
      }
      out.push(slider(index, d, d.channels[0].channel, channel, [y, x]));
      for (const c of d.channels) {
        out.push(el("div", { class: "conv-channel" }, windowOn(index, c.channel, d), numbers(c.window, `input channel ${c.channel}: window`),
          numbers(c.kernel, "kernel"), line(`Σ window·kernel = ${fmt(c.sum)}`)));
      }
      out.push(line(`sum over ${d.in_channels} channel(s) = ${fmt(d.sum)}; + bias ` +
        `${fmt(d.bias)} = ${fmt(d.computed)}`));
    } else if (d.kind === "pool" && d.window) {
      out.push(line(`${d.pool} pooling over input rows ${d.rows.join(", ")}, columns ` +
        `${d.cols.join(", ")} of the same channel.`, "note"));
      if (d.input_size) out.push(slider(index, d, channel, channel, [y, x]));
      out.push(numbers(d.window, "window", d.kept));
      out.push(line(d.pool === "max" ? `kept the largest: ${fmt(d.computed)}` :
        `mean: sum / ${d.divisor ?? d.window.flat().length} = ${fmt(d.computed)}`));
    } else if (d.kind === "linear") {
      out.push(line(`${d.formula} over ${d.inputs} inputs; the largest contributions:`, "note"));
      const table = el("table", { class: "grid-nums" },
        el("tr", {}, el("td", { text: "input" }), el("td", { text: "x" }),
           el("td", { text: "w" }), el("td", { text: "x·w" })));
      for (const c of d.contributions) {
        table.append(el("tr", {}, el("td", { text: String(c.input) }),
          el("td", { text: fmt(c.x) }), el("td", { text: fmt(c.w) }),
          el("td", { text: fmt(c.product) })));
      }
      out.push(table);
      out.push(line(`sum of all ${d.inputs} = ${fmt(d.sum)}; + bias ${fmt(d.bias)} = ` +
        `${fmt(d.computed)}`));
    } else if (d.kind === "batchnorm") {
      out.push(line(`${d.formula} = (${fmt(d.input)} − ${fmt(d.mean)}) / √(${fmt(d.var)} + ` +
        `${d.eps}) · ${fmt(d.gamma)} + ${fmt(d.beta)} = ${fmt(d.computed)}`));
    } else if (d.note) {
      out.push(line(d.note, "note"));
    } else {
      out.push(line("An elementwise layer: its value comes from the previous layer's value " +
        "at the same place.", "note"));
    }
    const value = el("p", { class: "big" }, "value in the map: ",
      el("span", { id: "neuron-value", text: fmt(d.value) }));
    out.push(value);
    for (const f of d.following || []) {
      out.push(line(`then ${f.name} (${f.type}) → ${fmt(f.value)}`));
    }
    $("neuron").replaceChildren(...out);
    $("neuron-panel").scrollIntoView({ block: "nearest" });
    if (state.layer.shape.length === 1) {
      $("rf").style.display = "none";
      return;
    }
    const rf = await api("receptive_field", { layer: index, channel, y, x });
    if (rf.box) {
      const [top, left, bottom, right] = rf.box;
      const [, h, w] = state.graph.input_size;
      const box = $("rf");
      const size = $("input").clientWidth;
      Object.assign(box.style, {
        display: "block", top: `${(top / h) * size}px`, left: `${(left / w) * size}px`,
        height: `${((bottom - top) / h) * size}px`, width: `${((right - left) / w) * size}px`,
      });
      $("neuron").append(line(`Receptive field on the input (magenta box): rows ${top}–${bottom - 1}, ` +
        `columns ${left}–${right - 1} (the pixels this value depends on for this image; ` +
        `the layer's full field is ${rf.theoretical_size?.join("×") ?? "?"} px).`, "note"));
    } else {
      $("rf").style.display = "none";
      if (rf.note) $("neuron").append(line(rf.note, "note"));
    }
    if (rf.input_box) $("neuron").append(previousMaps(index, d, channel, rf));
  } catch (err) {
    say(err.message, true);
  }
}

// The receptive field on the layer's input, the previous layer's maps: the cells this value
// depends on (the gradient's support), drawn on the channels the computation reads most.
function previousMaps(layer, d, channel, rf) {
  const [top, left, bottom, right] = rf.input_box;
  const [, channels, h, w] = rf.input_shape;
  const shown = d.kind === "conv" && d.channels ? d.channels.slice(0, 4).map((c) => c.channel) :
    [channel < channels ? channel : 0];
  const size = 96;
  const k = size / w;
  const maps = shown.map((c) => {
    const img = el("img", { class: "input-map", alt: `input channel ${c}`,
                            src: png("input_channel", { layer, channel: c }) });
    Object.assign(img.style, { width: `${size}px`, height: `${h * k}px` });
    const box = el("div", { class: "window-box" });
    Object.assign(box.style, { top: `${top * k}px`, left: `${left * k}px`,
      height: `${(bottom - top) * k}px`, width: `${(right - left) * k}px` });
    return el("div", { class: "note" }, el("div", { class: "boxed" }, img, box),
              `input channel ${c}`);
  });
  return el("div", { id: "rf-previous" },
    line(`Receptive field on the layer's input, ${channels}×${h}×${w} (the previous layer's ` +
      `maps; for the first layer, the image), in magenta: rows ${top}–${bottom - 1}, ` +
      `columns ${left}–${right - 1}.`, "note"),
    el("div", { class: "slider" }, ...maps));
}

// --- the answer ------------------------------------------------------------------------------

function drawAnswer(t) {
  const rows = [el("tr", {}, el("th", { text: "class" }), el("th", { text: "logit" }),
                   el("th", { text: "probability" }))];
  for (const c of t.classes) {
    rows.push(el("tr", {}, el("td", { text: c.name }), el("td", { text: fmt(c.logit) }),
                 el("td", { text: `${(100 * c.probability).toFixed(2)}%` })));
  }
  $("topk").replaceChildren(...rows);
  const top = t.classes[0];
  $("softmax").textContent = `Softmax: ${t.formula}. For ${top.name}: exp(${fmt(top.logit)} − ` +
    `${fmt(t.max_logit)}) / ${fmt(t.sum_exp)} = ${(100 * top.probability).toFixed(2)}%.`;
  const select = $("cam-class");
  select.replaceChildren(...t.classes.map((c) => el("option", { value: c.class, text: c.name })));
  $("cam").src = png("cam", { class: top.class });
}

// --- uploads ---------------------------------------------------------------------------------

async function upload(file) {
  say(`uploading ${file.name}…`);
  try {
    const response = await fetch("/api/images", {
      method: "POST", body: file,
      headers: { "X-Filename": encodeURIComponent(file.name).slice(0, 200) },
    });
    const body = await response.json();
    if (!response.ok) {
      say(`Refused: ${body.error}`, true);
      return;
    }
    await loadSession(body.key);
    await showAll();
  } catch (err) {
    say(`Upload failed: ${err.message}`, true);
  }
}

// --- wiring ----------------------------------------------------------------------------------

$("file").addEventListener("change", (event) => {
  const file = event.target.files[0];
  if (file) upload(file);
  event.target.value = "";
});
document.body.addEventListener("dragover", (event) => {
  event.preventDefault();
  document.body.classList.add("dragging");
});
document.body.addEventListener("dragleave", () => document.body.classList.remove("dragging"));
document.body.addEventListener("drop", (event) => {
  event.preventDefault();
  document.body.classList.remove("dragging");
  const file = event.dataTransfer.files[0];
  if (file) upload(file);
});
$("model").addEventListener("change", async (event) => {
  state.model = event.target.value;
  await showAll();
});
$("image").addEventListener("change", async (event) => {
  state.image = event.target.value;
  await showAll();
});
$("cam-class").addEventListener("change", (event) => {
  $("cam").src = png("cam", { class: event.target.value });
});

// The token came in the address; the cookie now carries it, so take it out of the address bar.
if (location.search.includes("token=")) history.replaceState(null, "", "/");
await loadSession();
await showAll();
