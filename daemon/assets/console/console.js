// The test page: send the photo to the admin preview API (the session
// cookie authenticates it), then show the original with the boxes found,
// the masked image and the timings. No other script runs in the console.
"use strict";
(function () {
  var form = document.getElementById("test-form");
  if (!form) return;
  var status = document.getElementById("test-status");
  var svgNS = "http://www.w3.org/2000/svg";
  var originalUrl = null;

  function show(id, on) { document.getElementById(id).hidden = !on; }

  function drawBoxes(result) {
    var svg = document.getElementById("boxes");
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    svg.setAttribute("viewBox", "0 0 " + result.image.width + " " + result.image.height);
    svg.setAttribute("preserveAspectRatio", "none");
    result.detections.forEach(function (d) {
      var r = document.createElementNS(svgNS, "rect");
      r.setAttribute("x", d.bbox.x1);
      r.setAttribute("y", d.bbox.y1);
      r.setAttribute("width", d.bbox.x2 - d.bbox.x1);
      r.setAttribute("height", d.bbox.y2 - d.bbox.y1);
      svg.appendChild(r);
    });
  }

  function timings(result) {
    var body = document.querySelector("#timings tbody");
    while (body.firstChild) body.removeChild(body.firstChild);
    var p = result.profiling;
    [["decode", p.decode_ms], ["preprocess", p.preprocess_ms], ["inference", p.inference_ms],
     ["postprocess", p.postprocess_ms], ["mask", p.mask_ms], ["encode", p.encode_ms],
     ["queue", p.queue_ms], ["total", p.total_ms]].forEach(function (row) {
      if (row[1] === null || row[1] === undefined) return;
      var tr = document.createElement("tr");
      var th = document.createElement("th");
      th.scope = "row";
      th.textContent = row[0];
      var td = document.createElement("td");
      td.textContent = Number(row[1]).toFixed(2);
      tr.appendChild(th);
      tr.appendChild(td);
      body.appendChild(tr);
    });
    show("timings", true);
  }

  form.addEventListener("submit", function (ev) {
    ev.preventDefault();
    var file = document.getElementById("photo").files[0];
    if (!file) return;
    var params = new URLSearchParams();
    ["method", "strength", "padding", "format"].forEach(function (name) {
      var v = document.getElementById(name).value;
      if (v !== "") params.set(name, v);
    });
    var body = new FormData();
    body.append("image", file, file.name);
    status.textContent = "Masking…";
    show("test-result", false);
    fetch("/api/v1/admin/test/mask?" + params.toString(), {
      method: "POST", body: body, credentials: "same-origin"
    }).then(function (resp) {
      return resp.json().then(function (json) { return { ok: resp.ok, status: resp.status, json: json }; });
    }).then(function (r) {
      if (!r.ok) {
        status.textContent = "Error " + r.status + ": " + (r.json.detail || "request failed");
        return;
      }
      var res = r.json;
      if (originalUrl) URL.revokeObjectURL(originalUrl);
      originalUrl = URL.createObjectURL(file);
      document.getElementById("original").src = originalUrl;
      var mime = { jpeg: "image/jpeg", png: "image/png", webp: "image/webp" }[res.output.format] || "image/jpeg";
      document.getElementById("masked").src = "data:" + mime + ";base64," + res.output.image_base64;
      drawBoxes(res);
      timings(res);
      show("test-result", true);
      status.textContent = res.summary.face_count + " face(s) masked with " + res.masking.method +
        " (" + (res.masking.strength ? "strength " + res.masking.strength : "default strength") + ") in " + res.profiling.total_ms.toFixed(1) + " ms.";
    }).catch(function (e) {
      status.textContent = "Error: " + e;
    });
  });
})();
