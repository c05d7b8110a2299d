// The upload page: the server's public API only (GET /models, GET /models/<name>/latest,
// POST /models/<name>/latest?input=true with the file as multipart `file`).
const $ = (id) => document.getElementById(id);

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

async function loadModels() {
  const response = await fetch("/models");
  const { models } = await response.json();
  for (const model of models.filter((m) => m.latest !== null)) {
    const option = new Option(`${model.name} (latest: v${model.latest})`, model.name);
    $("model").add(option);
  }
}

function drawSeen(pixels) {
  const context = $("seen").getContext("2d");
  const image = context.createImageData(28, 28);
  pixels.flat().forEach((value, i) => {
    // the dataset's form: a light garment on black, as the model sees it
    image.data.set([value, value, value, 255], i * 4);
  });
  context.putImageData(image, 0, 0);
}

function drawBars(classes, probabilities, top) {
  $("bars").replaceChildren(...classes.map((name, i) => {
    const row = document.createElement("li");
    row.className = i === top ? "top" : "";
    row.dataset.label = name;
    row.innerHTML = '<span class="name"></span><span class="bar"><span></span></span><span class="p"></span>';
    row.querySelector(".name").textContent = name;
    row.querySelector(".bar span").style.width = `${(probabilities[i] * 100).toFixed(1)}%`;
    row.querySelector(".p").textContent = probabilities[i].toFixed(3);
    return row;
  }));
}

async function classify(file) {
  showError("");
  const name = $("model").value;
  const body = new FormData();
  body.append("file", file);
  const response = await fetch(`/models/${encodeURIComponent(name)}/latest?input=true`, { method: "POST", body });
  const answer = await response.json();
  if (!response.ok) {
    $("answer").hidden = true;
    showError(`${response.status}: ${answer.error}`);
    return;
  }
  const info = await (await fetch(`/models/${encodeURIComponent(name)}/v${answer.model.version}`)).json();
  const [prediction] = answer.predictions;
  $("photo").src = URL.createObjectURL(file);
  drawSeen(prediction.input);
  $("label").textContent = prediction.label;
  $("confidence").textContent = `${(prediction.confidence * 100).toFixed(1)}%`;
  $("ood").hidden = prediction.in_distribution !== false;
  $("version").textContent = `${answer.model.name} v${answer.model.version}`;
  $("prediction-id").textContent = prediction.id;
  drawBars(info.classes, answer.result[0], prediction.class_id);
  $("answer").hidden = false;
  document.body.dataset.state = "answered";
}

$("file").addEventListener("change", () => $("file").files[0] && classify($("file").files[0]));
const drop = $("drop");
drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  if (event.dataTransfer.files[0]) classify(event.dataTransfer.files[0]);
});
loadModels().catch((error) => showError(`could not list the models: ${error}`));
