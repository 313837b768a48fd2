// SampleGen instrument page: gestures go to the server as latent-space requests, notes come back as WAVs
// that the Web Audio API plays pitched from C4 by resampling. No framework, no build step, no CDN.
"use strict";

const $ = (id) => document.getElementById(id);
const FAMILY_COLOURS = ["#e6194b", "#3cb44b", "#ffe119", "#4363d8", "#f58231", "#911eb4", "#46f0f0", "#f032e6",
  "#bcf60c", "#fabebe", "#008080", "#e6beff", "#9a6324", "#fffac8", "#aaffc3", "#808000", "#ffd8b1", "#a9a9a9"];
const KEY_OFFSETS = { a: 0, w: 1, s: 2, e: 3, d: 4, f: 5, t: 6, g: 7, y: 8, h: 9, u: 10, j: 11, k: 12, o: 13, l: 14 };
const NOTE_NAMES = ["C", "C♯", "D", "D♯", "E", "F", "F♯", "G", "G♯", "A", "A♯", "B"];

const state = {
  client: Math.random().toString(36).slice(2, 12) + Date.now().toString(36),
  seq: 0, info: null, current: null, buffer: null, octave: 4, busy: false, next: null,
  corners: [0, 0, 0, 0], pad: { x: 0.5, y: 0.5 }, restTimer: null, favourites: [],
  history: [], other: null, side: null,
  voices: new Map(), preview: null, notesStarted: 0, peakSeen: 0, rendered: 0, heardAt: [],
};
let ctx = null, output = null;
const METER_FLOOR_DB = -60;  // the level meter's floor: quieter reads as silence
// A drag renders drafts (fewer phase-retrieval iterations); when the hand rests this long, or lets go,
// the full note is rendered.
const REST_MS = 250;
const HISTORY = 50;  // sounds Undo can go back to

function status(text) { $("status").textContent = text; }

// ---------------------------------------------------------------- audio
// Voices → master gain (the Volume control, −6 dB by default) → limiter → safety clip → analyser (the
// meter) → speakers. Notes are normalised near full scale, so a chord sums past it (four notes reached
// 1.56): the master gain's headroom keeps a few notes clean, the limiter holds more below full scale, and
// the clip catches what its attack lets through (eight notes at 0 dB reached 1.15 without it).
function outputChain(ac, volumeDb) {
  const master = ac.createGain();
  master.gain.value = Math.pow(10, volumeDb / 20);
  const limiter = ac.createDynamicsCompressor();  // as a limiter: hard knee, highest ratio, fast attack
  limiter.threshold.value = -6;
  limiter.knee.value = 0;
  limiter.ratio.value = 20;
  limiter.attack.value = 0.001;
  limiter.release.value = 0.1;
  const clip = ac.createWaveShaper();
  clip.curve = softClipCurve();
  const analyser = ac.createAnalyser();
  analyser.fftSize = 2048;
  master.connect(limiter).connect(clip).connect(analyser).connect(ac.destination);
  return { master, limiter, analyser };
}

function softClipCurve(knee = 0.8, ceiling = 0.98) {
  // Unchanged up to the knee, then bent towards the ceiling; a WaveShaper holds inputs beyond ±1 at the ends.
  const curve = new Float32Array(4097);
  for (let i = 0; i < curve.length; i++) {
    const x = (2 * i) / (curve.length - 1) - 1, a = Math.abs(x);
    curve[i] = a <= knee ? x : Math.sign(x) * (knee + (ceiling - knee) * Math.tanh((a - knee) / (ceiling - knee)));
  }
  return curve;
}

function audio() {
  if (!ctx) {
    ctx = new (window.AudioContext || window.webkitAudioContext)();
    output = outputChain(ctx, Number($("volume").value));
    watchLevel();
  }
  if (ctx.state === "suspended") ctx.resume();
  return ctx;
}

function setVolume() {
  const db = Number($("volume").value);
  $("volume-out").textContent = `${db} dB`;
  if (output) output.master.gain.setTargetAtTime(Math.pow(10, db / 20), ctx.currentTime, 0.01);
}

function outputPeak() {
  if (!output) return 0;
  const data = new Float32Array(output.analyser.fftSize);
  output.analyser.getFloatTimeDomainData(data);
  let peak = 0;
  for (const v of data) peak = Math.max(peak, Math.abs(v));
  return peak;
}

function watchLevel() {  // the analyser holds the last 46 ms: reading it every 20 ms misses no sample
  const tick = () => {
    const peak = outputPeak();
    state.peakSeen = Math.max(state.peakSeen, peak);
    const db = Math.max(METER_FLOOR_DB, 20 * Math.log10(Math.max(peak, 1e-9)));
    const reduction = output.limiter.reduction;  // dB, ≤ 0
    $("level").value = db;
    $("level-out").textContent = db <= METER_FLOOR_DB ? "silent" :
      `${db.toFixed(1)} dBFS${reduction < -0.5 ? `, limiting ${(-reduction).toFixed(1)} dB` : ""}`;
  };
  setInterval(tick, 20);
}

function startVoice(midi, velocity) {
  if (!state.buffer) return null;
  const ac = audio();
  const t = ac.currentTime;
  const attack = Number($("attack").value) / 1000;
  const src = ac.createBufferSource();
  src.buffer = state.buffer;
  // root: the key at which the note sounds at its own measured pitch (C4 = 60, fractional): keys play in tune
  const root = state.current && Number.isFinite(state.current.root) ? state.current.root : 60;
  src.playbackRate.value = Math.pow(2, (midi - root) / 12);
  const loop = state.current && state.current.loop;
  if (loop) {
    src.loop = true;
    src.loopStart = loop[0] / state.buffer.sampleRate;
    src.loopEnd = loop[1] / state.buffer.sampleRate;
  }
  const env = ac.createGain();
  env.gain.setValueAtTime(0, t);
  env.gain.linearRampToValueAtTime(velocity, t + attack);
  src.connect(env).connect(output.master);
  src.start(t);
  state.notesStarted += 1;
  return { src, env };
}

function stopVoice(voice, releaseMs) {
  if (!voice || !ctx) return;
  const t = ctx.currentTime;
  const release = (releaseMs ?? Number($("release").value)) / 1000;
  voice.env.gain.cancelScheduledValues(t);
  voice.env.gain.setValueAtTime(voice.env.gain.value, t);
  voice.env.gain.linearRampToValueAtTime(0, t + release);
  voice.src.stop(t + release + 0.02);
}

function noteOn(midi, velocity = 0.9) {
  if (state.voices.has(midi)) stopVoice(state.voices.get(midi), 15);
  const voice = startVoice(midi, velocity);
  if (voice) state.voices.set(midi, voice);
  const key = document.querySelector(`#keyboard [data-midi="${midi}"]`);
  if (key) key.classList.add("down");
}

function noteOff(midi) {
  stopVoice(state.voices.get(midi));
  state.voices.delete(midi);
  const key = document.querySelector(`#keyboard [data-midi="${midi}"]`);
  if (key) key.classList.remove("down");
}

function preview() {  // the new sound at C4, cutting the previous preview short
  if (state.preview) stopVoice(state.preview, 30);
  state.preview = startVoice(60, 0.8);
  state.heardAt.push(performance.now());
  const voice = state.preview;
  setTimeout(() => { if (state.preview === voice) { stopVoice(voice); state.preview = null; } }, 1200);
}

// ---------------------------------------------------------------- server
// One request in flight per page; a newer gesture waits in a single slot (latest wins) and goes out when
// the one in flight has answered. A drag therefore yields a new note every round trip; aborting the
// request in flight at each move, as before, rendered nothing until the hand stopped.
function gesture(url, body, options = {}) {
  return new Promise((resolve) => {
    if (state.next) state.next.resolve(null);  // overtaken before it was sent
    state.next = { url, body, options, resolve };
    pump();
  });
}

async function pump() {
  if (state.busy || !state.next) return;
  const job = state.next;
  state.next = null;
  state.busy = true;
  try {
    job.resolve(await send(job.url, job.body, job.options));
  } finally {
    state.busy = false;
    pump();
  }
}

async function send(url, body, { play = true, upload = null } = {}) {
  state.seq += 1;
  try {
    const res = upload
      ? await fetch(`${url}&client=${state.client}&seq=${state.seq}`, { method: "POST", body: upload,
          headers: { "Content-Type": "application/octet-stream" } })
      : await fetch(url, { method: "POST", headers: { "Content-Type": "application/json" },
          body: JSON.stringify({ ...body, client: state.client, seq: state.seq }) });
    if (res.status === 409) return null;  // another tab of this page overtook it
    if (!res.ok) {
      const detail = await res.json().catch(() => ({}));
      status(`Error ${res.status}: ${typeof detail.detail === "string" ? detail.detail : JSON.stringify(detail.detail)}`);
      return null;
    }
    const note = await res.json();
    const wav = await fetch(note.wav).then((r) => r.arrayBuffer());
    const buffer = await audio().decodeAudioData(wav);
    if (!(state.current && state.current.quality === "draft") && state.current) remember();
    setCurrent(note, buffer, play);
    state.rendered += 1;
    return note;
  } catch (err) {
    status(`Server unreachable: ${err.message}`);
    return null;
  }
}

function setCurrent(note, buffer, play) {
  state.current = note;
  state.buffer = buffer;
  show(note);
  if (play) preview();
}

// ---------------------------------------------------------------- undo, A/B
// Undo goes back through the sounds you had before each gesture (a drag's drafts count as one gesture).
function remember() {
  state.history.push({ note: state.current, buffer: state.buffer });
  if (state.history.length > HISTORY) state.history.shift();
  $("undo").disabled = false;
}

function undo() {
  const last = state.history.pop();
  $("undo").disabled = state.history.length === 0;
  if (!last) { status("nothing to undo"); return; }
  audio();
  setCurrent(last.note, last.buffer, true);
  status(`back to ${last.note.source}`);
}

function keepA() {
  if (!state.current) return;
  state.other = { note: state.current, buffer: state.buffer };
  state.side = "A";
  $("ab").disabled = false;
  $("ab-side").textContent = "A kept; change the sound, then compare";
}

function compare() {  // swap the current sound with the other slot: A ↔ B
  if (!state.other) return;
  audio();
  const here = { note: state.current, buffer: state.buffer };
  setCurrent(state.other.note, state.other.buffer, true);
  state.other = here;
  state.side = state.side === "A" ? "B" : "A";
  $("ab-side").textContent = `hearing ${state.side === "A" ? "B" : "A"}`;
}

// ---------------------------------------------------------------- views
function show(note) {
  $("current-name").textContent = `${note.source}  ·  peak ${(20 * Math.log10(Math.max(note.peak, 1e-9))).toFixed(1)} dBFS raw` +
    (note.loop ? "  ·  sustain loop" : "") + (note.quality === "draft" ? "  ·  draft" : "");
  status(`rendered in ${note.render_ms.toFixed(0)} ms${note.quality === "draft" ? " (draft)" : ""}`);
  $("save").disabled = false;
  $("save-preset").disabled = false;
  drawSpectrogram(note.spectrogram);
  drawWaveform(state.buffer);
  moveMarker(note.map);
  note.knobs.forEach((v, i) => {
    const input = $(`knob-${i}`);
    if (input && document.activeElement !== input && !input.dataset.dragging) input.value = v.toFixed(2);
  });
}

function colourMap(v) {  // dark blue → purple → orange → pale yellow
  const stops = [[0, 0, 4], [80, 18, 123], [182, 54, 121], [251, 136, 97], [252, 253, 191]];
  const x = (v / 255) * (stops.length - 1), i = Math.min(Math.floor(x), stops.length - 2), f = x - i;
  return stops[i].map((c, k) => c + (stops[i + 1][k] - c) * f);
}

function drawSpectrogram(spec) {
  const canvas = $("spectrogram"), g = canvas.getContext("2d");
  const bytes = Uint8Array.from(atob(spec.data), (c) => c.charCodeAt(0));
  const img = g.createImageData(spec.cols, spec.rows);
  for (let r = 0; r < spec.rows; r++) {
    for (let c = 0; c < spec.cols; c++) {
      const [R, G, B] = colourMap(bytes[r * spec.cols + c]);
      const o = ((spec.rows - 1 - r) * spec.cols + c) * 4;
      img.data[o] = R; img.data[o + 1] = G; img.data[o + 2] = B; img.data[o + 3] = 255;
    }
  }
  const tmp = document.createElement("canvas");
  tmp.width = spec.cols; tmp.height = spec.rows;
  tmp.getContext("2d").putImageData(img, 0, 0);
  g.imageSmoothingEnabled = false;
  g.drawImage(tmp, 0, 0, canvas.width, canvas.height);
}

function drawWaveform(buffer) {
  const canvas = $("waveform"), g = canvas.getContext("2d");
  const data = buffer.getChannelData(0), w = canvas.width, h = canvas.height, step = Math.ceil(data.length / w);
  g.clearRect(0, 0, w, h);
  g.fillStyle = "#7fd1ff";
  for (let x = 0; x < w; x++) {
    let lo = 1, hi = -1;
    for (let i = x * step; i < Math.min((x + 1) * step, data.length); i++) { lo = Math.min(lo, data[i]); hi = Math.max(hi, data[i]); }
    g.fillRect(x, (1 - hi) * h / 2, 1, Math.max(1, (hi - lo) * h / 2));
  }
}

// ---------------------------------------------------------------- map
const SVG = "http://www.w3.org/2000/svg";
let marker = null;

function buildMap(info) {
  // The view spans the 2nd-98th percentiles; notes beyond it sit on its edge (their names still show).
  const svg = $("map");
  const [vx0, vy0, vx1, vy1] = info.view;
  const size = Math.max(vx1 - vx0, vy1 - vy0, 1e-6) * 1.1;
  const cx = (vx0 + vx1) / 2, cy = (vy0 + vy1) / 2;
  state.view = { minX: cx - size / 2, maxX: cx + size / 2, minY: cy - size / 2, maxY: cy + size / 2 };
  svg.setAttribute("viewBox", `${state.view.minX} ${-state.view.maxY} ${size} ${size}`);
  const colour = (family) => FAMILY_COLOURS[info.families.indexOf(family) % FAMILY_COLOURS.length];
  const radius = size / 90;
  state.radius = radius;
  for (const p of info.points) {
    const [x, y] = onMap([p.x, p.y]);
    const c = document.createElementNS(SVG, "circle");
    c.setAttribute("cx", x); c.setAttribute("cy", -y); c.setAttribute("r", radius);
    c.setAttribute("fill", colour(p.family)); c.setAttribute("class", "point"); c.dataset.id = p.id;
    const title = document.createElementNS(SVG, "title");
    title.textContent = `${p.name} (${p.family})`;
    c.appendChild(title);
    c.addEventListener("mouseenter", () => { $("hover").textContent = `${p.name} · ${p.family}`; });
    c.addEventListener("click", () => chooseSound(p.id));
    svg.appendChild(c);
  }
  marker = document.createElementNS(SVG, "circle");
  marker.setAttribute("r", radius * 2.2); marker.setAttribute("class", "current"); marker.setAttribute("cx", 1e6);
  svg.appendChild(marker);
  const legend = $("legend");
  for (const f of info.families) {
    const s = document.createElement("span");
    s.textContent = f; s.style.setProperty("--c", colour(f));
    legend.appendChild(s);
  }
}

function onMap([x, y]) {  // clamp into the shown view, a radius inside its edge
  const v = state.view, r = state.radius || 0;
  return [Math.min(v.maxX - r, Math.max(v.minX + r, x)), Math.min(v.maxY - r, Math.max(v.minY + r, y))];
}

function addOwnPoint(note) {  // a dropped sound file, kept on the map for the session
  const [x, y] = onMap(note.map);
  const c = document.createElementNS(SVG, "circle");
  c.setAttribute("cx", x); c.setAttribute("cy", -y); c.setAttribute("r", state.radius * 1.6);
  c.setAttribute("class", "own");
  const title = document.createElementNS(SVG, "title");
  title.textContent = `${note.source} (your sound)`;
  c.appendChild(title);
  const z = note.z, name = note.source;
  c.addEventListener("click", () => gesture("/api/render", { z, name }));
  $("map").insertBefore(c, marker);
}

function moveMarker(xy) {
  if (!marker) return;
  const [x, y] = onMap(xy);
  marker.setAttribute("cx", x); marker.setAttribute("cy", -y);
}

function chooseSound(id) {
  $("sound-select").value = String(id);
  gesture(`/api/sounds/${id}`, {});
}

// ---------------------------------------------------------------- pad
function blendNow(quality) {
  return gesture("/api/blend", { corners: state.corners, x: state.pad.x, y: state.pad.y, quality });
}

// While dragging, drafts; when the hand rests (REST_MS) or lets go, the full note.
function restThenRefine(refine) {
  clearTimeout(state.restTimer);
  state.restTimer = setTimeout(refine, REST_MS);
}

function setPad(x, y, dragging = false) {
  state.pad = { x: Math.min(1, Math.max(0, x)), y: Math.min(1, Math.max(0, y)) };
  const h = $("pad-handle");
  h.style.left = `${state.pad.x * 100}%`; h.style.top = `${state.pad.y * 100}%`;
  $("pad").setAttribute("aria-valuetext", `x ${state.pad.x.toFixed(2)}, y ${state.pad.y.toFixed(2)}`);
  if (dragging) {
    blendNow("draft");
    restThenRefine(() => blendNow("full"));
  } else {
    blendNow("full");
  }
}

function bindPad() {
  const pad = $("pad");
  const at = (e) => { const r = pad.getBoundingClientRect(); setPad((e.clientX - r.left) / r.width, (e.clientY - r.top) / r.height, true); };
  const release = (e) => {
    if (!pad.hasPointerCapture(e.pointerId)) return;
    pad.releasePointerCapture(e.pointerId);
    clearTimeout(state.restTimer);
    blendNow("full");
  };
  pad.addEventListener("pointerdown", (e) => { audio(); pad.setPointerCapture(e.pointerId); at(e); });
  pad.addEventListener("pointermove", (e) => { if (pad.hasPointerCapture(e.pointerId)) at(e); });
  pad.addEventListener("pointerup", release);
  pad.addEventListener("pointercancel", release);
  pad.addEventListener("keydown", (e) => {
    const step = e.shiftKey ? 0.2 : 0.05;
    const moves = { ArrowLeft: [-step, 0], ArrowRight: [step, 0], ArrowUp: [0, -step], ArrowDown: [0, step] };
    if (moves[e.key]) { e.preventDefault(); audio(); setPad(state.pad.x + moves[e.key][0], state.pad.y + moves[e.key][1]); }
    if (e.key === "Home") { e.preventDefault(); setPad(0.5, 0.5); }
  });
}

// ---------------------------------------------------------------- knobs, explore, favourites
function buildKnobs(info) {
  const box = $("knobs");
  for (const k of info.knobs) {
    const wrap = document.createElement("div");
    wrap.className = "knob";
    const label = document.createElement("label");
    label.htmlFor = `knob-${k.index}`;
    label.textContent = k.label;
    const input = document.createElement("input");
    Object.assign(input, { type: "range", id: `knob-${k.index}`, min: -info.knob_range, max: info.knob_range, step: 0.05, value: 0 });
    input.setAttribute("aria-describedby", `knob-hint-${k.index}`);
    const hint = document.createElement("small");
    hint.id = `knob-hint-${k.index}`;
    hint.textContent = k.hint;
    // A drag of the knob renders drafts, refined when it rests or is let go ("change"); a key step renders in full.
    const turn = (quality) => {
      if (!state.current) return;
      const positions = info.knobs.map((kn) => Number($(`knob-${kn.index}`).value));
      gesture("/api/knobs", { z: state.current.z, positions, quality });
    };
    input.addEventListener("pointerdown", () => { input.dataset.dragging = "1"; });
    input.addEventListener("pointerup", () => { delete input.dataset.dragging; });
    input.addEventListener("input", () => {
      if (!input.dataset.dragging) return;
      turn("draft");
      restThenRefine(() => turn("full"));
    });
    input.addEventListener("change", () => { clearTimeout(state.restTimer); turn("full"); });
    wrap.append(label, input, hint);
    box.appendChild(wrap);
  }
}

// ---------------------------------------------------------------- keep and share
function download(url) {
  const a = document.createElement("a");
  a.href = url; a.download = "";  // the server names the file (Content-Disposition)
  document.body.appendChild(a); a.click(); a.remove();
}

function saveNote(note) {  // the WAV and, beside it, its .latent.json (samplegen's commands reopen it)
  download(note.wav);
  download(note.latent);
}

// Favourites live in this browser (localStorage), per run, so they survive a reload.
function favouritesKey() { return `samplegen:favourites:${state.info.run}:${state.info.latent_dim}`; }

function storeFavourites() {
  try { localStorage.setItem(favouritesKey(), JSON.stringify(state.favourites)); }
  catch (err) { status(`Favourites not kept after a reload: ${err.message}`); }
}

function loadFavourites() {
  let saved = [];
  try { saved = JSON.parse(localStorage.getItem(favouritesKey()) || "[]"); } catch { saved = []; }
  state.favourites = Array.isArray(saved)
    ? saved.filter((f) => f && typeof f.name === "string" && Array.isArray(f.z) && f.z.length === state.info.latent_dim)
    : [];
  drawFavourites();
}

function drawFavourites() {
  const list = $("favourites");
  list.innerHTML = "";
  for (const fav of state.favourites) {
    const li = document.createElement("li");
    const recall = document.createElement("button");
    recall.type = "button"; recall.textContent = fav.name;
    recall.addEventListener("click", () => { audio(); gesture("/api/render", { z: fav.z, name: fav.name }); });
    const save = document.createElement("button");
    save.type = "button"; save.textContent = "Save WAV";
    save.setAttribute("aria-label", `Save favourite ${fav.name} as WAV`);
    save.addEventListener("click", async () => {
      const note = await gesture("/api/render", { z: fav.z, name: fav.name }, { play: false });
      if (note) saveNote(note);
    });
    const remove = document.createElement("button");
    remove.type = "button"; remove.textContent = "×";
    remove.setAttribute("aria-label", `Remove favourite ${fav.name}`);
    remove.addEventListener("click", () => {
      state.favourites = state.favourites.filter((f) => f !== fav);
      storeFavourites();
      drawFavourites();
    });
    li.append(recall, save, remove);
    list.appendChild(li);
  }
}

function addFavourite() {
  if (!state.current) return;
  const fav = { z: state.current.z, name: `${state.favourites.length + 1}. ${state.current.source}`.slice(0, 80) };
  state.favourites.push(fav);
  storeFavourites();
  drawFavourites();
  status(`kept as favourite ${fav.name}`);
}

async function loadPreset(file) {  // a .latent.json saved here or written by a samplegen command
  let data;
  try { data = JSON.parse(await file.text()); } catch { data = null; }
  const z = data && data.z;
  if (!Array.isArray(z) || z.length !== state.info.latent_dim || !z.every((v) => typeof v === "number")) {
    status(`${file.name} is not a preset of this run: it needs "z" with ${state.info.latent_dim} numbers`);
    return;
  }
  audio();
  const name = file.name.replace(/\.latent\.json$|\.json$/i, "").slice(0, 80) || "preset";
  await gesture("/api/render", { z, name });
}

async function dropSound(file) {  // a sound file of your own: encoded by the model, placed on the map
  audio();
  status(`encoding ${file.name} …`);
  const note = await gesture(`/api/encode?name=${encodeURIComponent(file.name)}`, null, { upload: file });
  if (note) addOwnPoint(note);
}

function bindFiles() {
  $("preset-file").addEventListener("change", (e) => { if (e.target.files[0]) loadPreset(e.target.files[0]); e.target.value = ""; });
  $("sound-file").addEventListener("change", (e) => { if (e.target.files[0]) dropSound(e.target.files[0]); e.target.value = ""; });
  window.addEventListener("dragover", (e) => { e.preventDefault(); document.body.classList.add("dropping"); });
  window.addEventListener("dragleave", (e) => { if (!e.relatedTarget) document.body.classList.remove("dropping"); });
  window.addEventListener("drop", (e) => {
    e.preventDefault();
    document.body.classList.remove("dropping");
    const file = e.dataTransfer && e.dataTransfer.files[0];
    if (!file) return;
    if (/\.json$/i.test(file.name)) loadPreset(file); else dropSound(file);
  });
}

// ---------------------------------------------------------------- keyboard, computer keys, MIDI
function buildKeyboard() {
  const kb = $("keyboard");
  kb.innerHTML = "";
  const base = 12 * (state.octave + 1);  // MIDI number of C in the chosen octave (C4 = 60)
  const whites = [];
  for (let m = base; m <= base + 24; m++) {
    const name = NOTE_NAMES[m % 12] + (Math.floor(m / 12) - 1);
    const black = name.includes("♯");
    const b = document.createElement("button");
    b.type = "button"; b.className = black ? "black" : "white"; b.dataset.midi = m;
    b.textContent = black ? "" : name; b.setAttribute("aria-label", `Play ${name}`);
    if (black) b.tabIndex = -1;
    b.addEventListener("pointerdown", (e) => { e.preventDefault(); audio(); b.setPointerCapture(e.pointerId); noteOn(m); });
    b.addEventListener("pointerup", () => noteOff(m));
    b.addEventListener("pointercancel", () => noteOff(m));
    b.addEventListener("keydown", (e) => { if ((e.key === " " || e.key === "Enter") && !e.repeat) { e.preventDefault(); audio(); noteOn(m); } });
    b.addEventListener("keyup", (e) => { if (e.key === " " || e.key === "Enter") noteOff(m); });
    kb.appendChild(b);
    if (!black) whites.push(b);
    else b.style.left = `calc(${(whites.length / 15) * 100}% - 2%)`;
  }
  $("octave").textContent = state.octave;
}

function typing(target) { return target && ["INPUT", "SELECT", "TEXTAREA"].includes(target.tagName) && target.type !== "range"; }

function bindComputerKeys() {
  window.addEventListener("keydown", (e) => {
    if ((e.ctrlKey || e.metaKey) && e.key.toLowerCase() === "z" && !typing(e.target)) { e.preventDefault(); undo(); return; }
    if (e.repeat || e.ctrlKey || e.metaKey || e.altKey || typing(e.target)) return;
    const key = e.key.toLowerCase();
    if (key === "z" || key === "x") { shiftOctave(key === "z" ? -1 : 1); return; }
    if (key in KEY_OFFSETS) { audio(); noteOn(12 * (state.octave + 1) + KEY_OFFSETS[key]); }
  });
  window.addEventListener("keyup", (e) => {
    const key = e.key.toLowerCase();
    if (key in KEY_OFFSETS) noteOff(12 * (state.octave + 1) + KEY_OFFSETS[key]);
  });
}

function shiftOctave(delta) {
  for (const m of [...state.voices.keys()]) noteOff(m);
  state.octave = Math.min(7, Math.max(1, state.octave + delta));
  buildKeyboard();
}

async function bindMidi() {
  if (!navigator.requestMIDIAccess) { $("midi-status").textContent = "Web MIDI is not available in this browser."; return; }
  try {
    const access = await navigator.requestMIDIAccess();
    const attach = () => {
      const names = [];
      for (const input of access.inputs.values()) {
        names.push(input.name);
        input.onmidimessage = (msg) => {
          const [cmd, note, vel] = msg.data, type = cmd & 0xf0;
          if (type === 0x90 && vel > 0) { audio(); noteOn(note, vel / 127); }
          else if (type === 0x80 || (type === 0x90 && vel === 0)) noteOff(note);
        };
      }
      $("midi-status").textContent = names.length ? `MIDI: ${names.join(", ")}` : "MIDI: no keyboard connected.";
    };
    access.onstatechange = attach;
    attach();
  } catch (err) {
    $("midi-status").textContent = `MIDI not allowed: ${err.message}`;
  }
}

// ---------------------------------------------------------------- start
function fillSelect(select, info, value) {
  for (const p of info.points) {
    const o = document.createElement("option");
    o.value = p.id; o.textContent = `${p.name} (${p.family})`;
    select.appendChild(o);
  }
  select.value = String(value);
}

async function start() {
  const res = await fetch("/api/info");
  const info = await res.json();
  state.info = info;
  $("run-name").textContent = `run ${info.run} · ${info.points.length} sounds · ${info.model.toUpperCase()} latent ${info.latent_dim}`;
  buildMap(info);
  state.corners = info.corners.slice();
  fillSelect($("sound-select"), info, info.corners[0]);
  $("sound-select").addEventListener("change", (e) => { audio(); gesture(`/api/sounds/${e.target.value}`, {}); });
  document.querySelectorAll("select.corner").forEach((sel) => {
    const i = Number(sel.dataset.corner);
    fillSelect(sel, info, state.corners[i]);
    sel.addEventListener("change", () => { state.corners[i] = Number(sel.value); setPad(state.pad.x, state.pad.y); });
  });
  buildKnobs(info);
  bindPad();
  buildKeyboard();
  bindComputerKeys();
  $("volume").addEventListener("input", setVolume);
  for (const [id, fmt] of [["temperature", (v) => v.toFixed(2)], ["amount", (v) => v.toFixed(2)], ["attack", (v) => `${v} ms`], ["release", (v) => `${v} ms`]]) {
    $(id).addEventListener("input", () => { $(`${id}-out`).textContent = fmt(Number($(id).value)); });
  }
  $("surprise").addEventListener("click", () => { audio(); gesture("/api/surprise", { temperature: Number($("temperature").value) }); });
  $("vary").addEventListener("click", () => { audio(); if (state.current) gesture("/api/vary", { z: state.current.z, amount: Number($("amount").value) }); });
  $("favourite").addEventListener("click", addFavourite);
  $("save").addEventListener("click", () => { if (state.current) saveNote(state.current); });
  $("save-preset").addEventListener("click", () => { if (state.current) download(state.current.latent); });
  $("undo").addEventListener("click", undo);
  $("keep-a").addEventListener("click", keepA);
  $("ab").addEventListener("click", compare);
  bindFiles();
  loadFavourites();
  $("octave-down").addEventListener("click", () => shiftOctave(-1));
  $("octave-up").addEventListener("click", () => shiftOctave(1));
  bindMidi();
  await gesture(`/api/sounds/${info.corners[0]}`, {}, { play: false });
}

// What the end-to-end test reads; harmless for players.
window.samplegen = { state, outputPeak, outputChain, startVoice, stopVoice, peakSeen: () => state.peakSeen,
  idle: () => !state.busy && !state.next };
start().catch((err) => status(`Could not start: ${err.message}`));
