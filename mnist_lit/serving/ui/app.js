// The drawing page: strokes on a canvas → POST /predict (this server only) → top 3 and the 28×28 the network saw;
// an image the checkpoint's rule says is not a digit is said so (once the pen is lifted: a digit half drawn is
// often no digit yet), its top 3 still shown, greyed.
"use strict";

const pad = document.getElementById("pad");
const ctx = pad.getContext("2d");
const answer = document.querySelector(".result");
const THROTTLE_MS = 150;  // at most one prediction this often while drawing; one more on release
const NOT_A_DIGIT = "That doesn't look like a digit";

let drawing = false;
let last = null;
let inFlight = false;
let queued = null;      // the latest image waiting for the request in flight to finish, and whether it is live
let lastSent = 0;
let timer = null;
let cleared = 0;        // how many times Clear was pressed: answers about a drawing cleared since are dropped

function wipe() {
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, pad.width, pad.height);
}

function clearPad() {
  wipe();
  cleared += 1;
  queued = null;
  clearTimeout(timer);
  timer = null;
  showEmpty("–", "");
}

function point(event) {
  const box = pad.getBoundingClientRect();
  return { x: (event.clientX - box.left) * pad.width / box.width, y: (event.clientY - box.top) * pad.height / box.height };
}

function dot(at) {  // a tap: a stroke of no length, which the canvas would not draw
  ctx.fillStyle = "#000";
  ctx.beginPath();
  ctx.arc(at.x, at.y, pad.width / 28, 0, 2 * Math.PI);
  ctx.fill();
}

function stroke(from, to) {
  ctx.strokeStyle = "#000";
  ctx.lineWidth = pad.width / 14;  // about MNIST's stroke once the digit is scaled to 20×20
  ctx.lineCap = "round";
  ctx.lineJoin = "round";
  ctx.beginPath();
  ctx.moveTo(from.x, from.y);
  ctx.lineTo(to.x, to.y);
  ctx.stroke();
}

pad.addEventListener("pointerdown", (event) => {
  drawing = true;
  pad.setPointerCapture(event.pointerId);
  last = point(event);
  dot(last);
  schedule();
});

pad.addEventListener("pointermove", (event) => {
  if (!drawing) return;
  const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [event];
  for (const e of events.length ? events : [event]) {
    const p = point(e);
    stroke(last, p);
    last = p;
  }
  schedule();
});

function release() {
  if (!drawing) return;
  drawing = false;
  clearTimeout(timer);
  timer = null;
  send(pad.toDataURL("image/png"), false);
}
pad.addEventListener("pointerup", release);
pad.addEventListener("pointercancel", release);

function schedule() {  // throttled live prediction while drawing
  if (timer) return;
  const wait = Math.max(0, THROTTLE_MS - (performance.now() - lastSent));
  timer = setTimeout(() => { timer = null; send(pad.toDataURL("image/png"), drawing); }, wait);
}

async function send(image, live = false) {  // live: sent while the pen is still down
  if (inFlight) { queued = { image, live }; return; }
  inFlight = true;
  lastSent = performance.now();
  const sentAfter = cleared;
  try {
    const response = await fetch("/predict", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ image }),
    });
    const body = await response.json();
    if (sentAfter !== cleared) return;  // the pad was cleared while this was on its way
    if (!response.ok) showEmpty("?", body.error || response.statusText, true);
    else show(body, live);
  } catch (err) {
    if (sentAfter === cleared) showEmpty("?", `the server did not answer (${err.message})`, true);
  } finally {
    inFlight = false;
    if (queued) { const next = queued; queued = null; send(next.image, next.live); }
  }
}

function show(result, live) {
  if (result.probabilities === null) { showEmpty("–", result.reason || ""); return; }  // blank: nothing drawn
  answer.classList.toggle("not-digit", !result.is_digit);
  document.getElementById("digit").textContent = result.is_digit ? result.digit : live ? "…" : NOT_A_DIGIT;
  document.getElementById("probability").textContent =
    result.is_digit ? `${(100 * result.probability).toFixed(1)} %` : "";
  document.getElementById("status").textContent = "";
  const bars = document.getElementById("bars");
  bars.replaceChildren(...result.top3.map(([digit, p]) => {
    const item = document.createElement("li");
    item.innerHTML = '<span class="label"></span><span class="track"><span class="fill"></span></span>' +
                     '<span class="value"></span>';
    item.querySelector(".label").textContent = digit;
    item.querySelector(".fill").style.width = `${(100 * p).toFixed(1)}%`;
    item.querySelector(".value").textContent = `${(100 * p).toFixed(1)} %`;
    return item;
  }));
  document.getElementById("seen").src = `data:image/png;base64,${result.seen}`;
}

function showEmpty(digit, message, isError = false) {
  answer.classList.remove("not-digit");
  document.getElementById("digit").textContent = digit;
  document.getElementById("probability").textContent = "";
  document.getElementById("bars").replaceChildren();
  document.getElementById("seen").removeAttribute("src");
  const status = document.getElementById("status");
  status.textContent = message;
  status.style.color = isError ? "" : "var(--muted)";
}

function useFile(file) {  // the file itself is sent, so it is read exactly as predict-images reads it
  if (!file) return;
  const reader = new FileReader();
  reader.onload = () => {
    const image = new Image();
    image.onload = () => {  // shown on the pad, fitted, for reference (its answer may be here already: keep it)
      wipe();
      const scale = Math.min(pad.width / image.width, pad.height / image.height);
      const w = image.width * scale, h = image.height * scale;
      ctx.drawImage(image, (pad.width - w) / 2, (pad.height - h) / 2, w, h);
    };
    image.src = reader.result;
    send(reader.result);
  };
  reader.readAsDataURL(file);
}

document.getElementById("clear").addEventListener("click", clearPad);
document.getElementById("file").addEventListener("change", (event) => useFile(event.target.files[0]));
pad.addEventListener("dragover", (event) => { event.preventDefault(); pad.classList.add("dragging"); });
pad.addEventListener("dragleave", () => pad.classList.remove("dragging"));
pad.addEventListener("drop", (event) => {
  event.preventDefault();
  pad.classList.remove("dragging");
  useFile(event.dataTransfer.files[0]);
});

fetch("/info").then((r) => r.json()).then((info) => {
  const model = info.model || {};
  if (model.network) {
    document.getElementById("model").textContent =
      `${model.network} (${model.checkpoint}): draw with a mouse, pen or finger, or drop an image file`;
  }
}).catch(() => {});

clearPad();
