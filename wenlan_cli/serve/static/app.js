// The search page: talks to the JSON API of the same server, loads nothing from elsewhere.
"use strict";

const $ = (id) => document.getElementById(id);
const TOKEN_KEY = "wenlan-token";

function authHeaders() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  return token ? { Authorization: "Bearer " + token } : {};
}

function say(text, ok) {
  $("status").textContent = text;
  $("status").className = ok ? "ok" : "";
}

async function call(url, options) {
  const response = await fetch(url, { ...(options || {}), headers: { ...authHeaders() } });
  if (response.status === 401) {
    $("token-form").hidden = false;
  }
  if (!response.ok) {
    let sentence = "请求失败（HTTP " + response.status + "）";
    try { sentence = (await response.json()).error || sentence; } catch (e) { /* not JSON */ }
    throw new Error(sentence);
  }
  return response;
}

async function loadInfo() {
  try {
    const info = await (await call("/healthz")).json();
    if (info.images === undefined) {
      $("info").textContent = "需要访问令牌才能查看索引信息。";
      $("token-form").hidden = false;
      return;
    }
    const ckpt = info.checkpoint;
    $("info").textContent = "索引：" + info.images + " 张图片 · 检查点：" + ckpt.name +
      "（" + ckpt.model + "，sha256 " + ckpt.sha256 + "）";
    $("info").dataset.images = info.images;
    $("info").dataset.checkpoint = ckpt.name;
  } catch (error) {
    $("info").textContent = error.message;
  }
}

async function thumbnail(img, url) {
  try {
    const blob = await (await call(url)).blob();
    img.src = URL.createObjectURL(blob);
  } catch (error) {
    img.alt = error.message;
  }
}

function show(answer) {
  const grid = $("results");
  grid.replaceChildren();
  for (const hit of answer.results) {
    const figure = document.createElement("figure");
    figure.className = "hit";
    figure.dataset.rank = hit.rank;
    figure.dataset.path = hit.path;
    figure.dataset.score = hit.score;
    const img = document.createElement("img");
    img.alt = hit.path;
    thumbnail(img, hit.thumbnail);
    const caption = document.createElement("figcaption");
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = hit.rank + ". " + hit.score.toFixed(4);
    caption.append(score, " " + hit.path);
    figure.append(img, caption);
    grid.append(figure);
  }
  say("共 " + answer.results.length + " 个结果（索引 " + answer.images + " 张图片）", true);
  grid.dataset.query = answer.query;
}

$("text-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const params = new URLSearchParams({ q: $("q").value, k: $("k").value || "12" });
  say("搜索中……", true);
  try {
    show(await (await call("/search?" + params.toString())).json());
  } catch (error) {
    say(error.message, false);
  }
});

$("image-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const file = $("file").files[0];
  if (!file) { say("请先选择一张图片。", false); return; }
  const body = new FormData();
  body.append("file", file);
  say("搜索中……", true);
  try {
    const k = encodeURIComponent($("k").value || "12");
    show(await (await call("/search/image?k=" + k, { method: "POST", body })).json());
  } catch (error) {
    say(error.message, false);
  }
});

$("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $("token").value);
  $("token-form").hidden = true;
  loadInfo();
});

loadInfo();
