// Digit reader: draw or upload a digit, send it to /api/predict, show the answer. No libraries, works offline.
"use strict";

const pad = document.getElementById("pad");
const context = pad.getContext("2d");
const fileInput = document.getElementById("file");
const drop = document.getElementById("drop");
const preview = document.getElementById("preview");
const dropText = document.getElementById("drop-text");

// ---- Drawing pad: white ink on black, like MNIST. Pointer events cover mouse, touch and pen. ----
const STROKE_WIDTH = 20; // of the pad's 280 px: about MNIST's stroke for a digit drawn across most of the pad
let drawing = false;
let hasInk = false;
let last = null;

function clearPad() {
  context.fillStyle = "#000";
  context.fillRect(0, 0, pad.width, pad.height);
  hasInk = false;
}

function padPoint(event) {
  const box = pad.getBoundingClientRect();
  return {
    x: ((event.clientX - box.left) * pad.width) / box.width,
    y: ((event.clientY - box.top) * pad.height) / box.height,
  };
}

function strokeTo(point) {
  context.strokeStyle = "#fff";
  context.fillStyle = "#fff";
  context.lineWidth = STROKE_WIDTH;
  context.lineCap = "round";
  context.lineJoin = "round";
  context.beginPath();
  if (last) {
    context.moveTo(last.x, last.y);
    context.lineTo(point.x, point.y);
    context.stroke();
  } else {
    context.arc(point.x, point.y, STROKE_WIDTH / 2, 0, 2 * Math.PI);
    context.fill();
  }
  last = point;
  hasInk = true;
}

pad.addEventListener("pointerdown", (event) => {
  event.preventDefault();
  pad.setPointerCapture(event.pointerId);
  drawing = true;
  last = null;
  strokeTo(padPoint(event));
});
pad.addEventListener("pointermove", (event) => {
  if (!drawing) return;
  for (const sample of event.getCoalescedEvents ? event.getCoalescedEvents() : [event]) {
    strokeTo(padPoint(sample));
  }
});
function endStroke() {
  if (!drawing) return;
  drawing = false;
  last = null;
  if (hasInk) pad.toBlob((blob) => predict(blob), "image/png");
}
pad.addEventListener("pointerup", endStroke);
pad.addEventListener("pointercancel", endStroke);
document.getElementById("clear").addEventListener("click", () => {
  clearPad();
  showPlaceholder();
});
clearPad();

// ---- Upload: a file picker and drag and drop. ----
function useFile(file) {
  if (!file) return;
  preview.src = URL.createObjectURL(file);
  preview.hidden = false;
  dropText.hidden = true;
  predict(file);
}
fileInput.addEventListener("change", () => useFile(fileInput.files[0]));
drop.addEventListener("dragover", (event) => {
  event.preventDefault();
  drop.classList.add("over");
});
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  useFile(event.dataTransfer.files[0]);
});

// ---- Tabs ----
for (const tab of document.querySelectorAll('[role="tab"]')) {
  tab.addEventListener("click", () => {
    for (const other of document.querySelectorAll('[role="tab"]')) {
      const selected = other === tab;
      other.setAttribute("aria-selected", String(selected));
      document.getElementById(other.getAttribute("aria-controls")).hidden = !selected;
    }
  });
}

// ---- Prediction ----
let requestNumber = 0; // answers to older requests (slow network) never overwrite newer ones

async function predict(blob) {
  const mine = ++requestNumber;
  const form = new FormData();
  form.append("image", blob, "digit");
  try {
    const response = await fetch("api/predict", { method: "POST", body: form });
    const body = await response.json().catch(() => ({ error: `the server answered ${response.status}` }));
    if (mine !== requestNumber) return;
    if (!response.ok) throw new Error(body.error || `the server answered ${response.status}`);
    showPrediction(body.predictions[0]);
  } catch (error) {
    if (mine === requestNumber) showError(error.message === "Failed to fetch" ? "cannot reach the server" : error.message);
  }
}

const bars = document.getElementById("bars");
for (let digit = 0; digit < 10; digit++) {
  const item = document.createElement("li");
  item.innerHTML = `<span class="label">${digit}</span><span class="track"><span class="fill"></span></span><span class="pct">0%</span>`;
  bars.appendChild(item);
}

function percent(probability) {
  return probability >= 0.995 || probability < 0.005 ? `${Math.round(probability * 100)}%` : `${(probability * 100).toFixed(1)}%`;
}

function showPrediction(prediction) {
  document.getElementById("placeholder").hidden = true;
  document.getElementById("error").hidden = true;
  document.getElementById("result").hidden = false;
  document.getElementById("digit").textContent = prediction.digit;
  document.getElementById("confidence").textContent = percent(prediction.confidence);
  document.getElementById("no-model").hidden = true;
  prediction.probabilities.forEach((probability, digit) => {
    const item = bars.children[digit];
    item.classList.toggle("top", digit === prediction.digit);
    item.querySelector(".fill").style.width = `${(probability * 100).toFixed(1)}%`;
    item.querySelector(".pct").textContent = percent(probability);
  });
  const seen = document.getElementById("seen").getContext("2d");
  const pixels = seen.createImageData(28, 28);
  prediction.image.flat().forEach((value, index) => {
    pixels.data.set([value, value, value, 255], index * 4);
  });
  seen.putImageData(pixels, 0, 0);
}

function showPlaceholder() {
  requestNumber++;
  document.getElementById("result").hidden = true;
  document.getElementById("error").hidden = true;
  document.getElementById("placeholder").hidden = false;
}

function showError(message) {
  const box = document.getElementById("error");
  box.textContent = `Could not read that: ${message}`;
  box.hidden = false;
}
