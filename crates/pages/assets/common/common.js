// What the resident's app and the till share: calls to the API with the session cookie, money
// in fen (never floats), the two languages, QR and bar codes drawn as SVG, and small DOM helpers.
"use strict";

const citypay = (() => {
  /** An answer of the API that is not a success, or no answer at all (status 0). */
  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  /** One call: resolves to the parsed body (JSON or text), rejects with an ApiError. */
  async function api(method, path, body, idempotencyKey) {
    const headers = {};
    if (body !== undefined) headers["content-type"] = "application/json";
    if (idempotencyKey) headers["idempotency-key"] = idempotencyKey;
    let response;
    try {
      response = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        credentials: "same-origin",
        cache: "no-store",
      });
    } catch (error) {
      throw new ApiError(0, "offline", String(error));
    }
    const type = response.headers.get("content-type") || "";
    const data = type.startsWith("application/json") ? await response.json() : await response.text();
    if (!response.ok) {
      const error = (data && data.error) || {};
      throw new ApiError(response.status, error.code || "error", error.message || response.statusText);
    }
    return data;
  }

  /** A fresh idempotency key: one per thing the user means to do, reused by its retries. */
  function newKey() {
    return crypto.randomUUID();
  }

  /** Fen as yuan text: 123456 -> "1,234.56". */
  function yuan(fen) {
    const sign = fen < 0 ? "-" : "";
    const abs = Math.abs(fen);
    const whole = Math.floor(abs / 100).toString().replace(/\B(?=(\d{3})+(?!\d))/g, ",");
    return sign + whole + "." + String(abs % 100).padStart(2, "0");
  }

  /** Money as the API writes it ({amount, currency}) as "¥1,234.56" (or "-¥8.00"). */
  function money(m) {
    return (m.amount < 0 ? "-¥" : "¥") + yuan(Math.abs(m.amount));
  }

  /** Typed yuan ("12", "12.5", "12.50") as fen, or null: read as text, never as a float. */
  function parseYuan(text) {
    const match = /^\s*(\d{1,9})(?:\.(\d{1,2}))?\s*$/.exec(text || "");
    if (!match) return null;
    const fen = Number(match[1]) * 100 + Number((match[2] || "").padEnd(2, "0"));
    return fen > 0 ? fen : null;
  }

  /** The strings of both languages; `t(key, ...values)` fills {0}, {1}. */
  function languages(strings) {
    let lang = localStorage.getItem("citypay.lang") || "zh";
    const i18n = {
      get lang() {
        return lang;
      },
      t(key, ...values) {
        const text = (strings[lang] && strings[lang][key]) || strings.en[key] || key;
        return text.replace(/\{(\d)\}/g, (_, i) => String(values[Number(i)]));
      },
      set(next) {
        lang = next;
        localStorage.setItem("citypay.lang", next);
        document.documentElement.lang = next === "zh" ? "zh-CN" : "en";
      },
    };
    i18n.set(lang);
    return i18n;
  }

  /** Builds an element: el("button", {type: "button", onclick: f}, "text", child...). */
  function el(tag, attributes, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else if (name === "className") node.className = value;
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === undefined || child === null || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  /** Text as the bytes of its UTF-8 encoding, one character per byte (the QR library's input). */
  function utf8Binary(text) {
    return Array.from(new TextEncoder().encode(text), (b) => String.fromCharCode(b)).join("");
  }

  /** A QR code (byte mode, level M) of `bytes` (a Uint8Array) or of text, as an SVG element. */
  function qrSvg(data, label) {
    const binary = typeof data === "string" ? utf8Binary(data) : Array.from(data, (b) => String.fromCharCode(b)).join("");
    const qr = qrcode(0, "M");
    qr.addData(binary, "Byte");
    qr.make();
    const count = qr.getModuleCount();
    const quiet = 4;
    let path = "";
    for (let row = 0; row < count; row += 1) {
      for (let col = 0; col < count; col += 1) {
        if (qr.isDark(row, col)) path += "M" + (col + quiet) + "," + (row + quiet) + "h1v1h-1z";
      }
    }
    const ns = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(ns, "svg");
    const size = count + 2 * quiet;
    svg.setAttribute("viewBox", "0 0 " + size + " " + size);
    svg.setAttribute("role", "img");
    svg.setAttribute("aria-label", label);
    svg.setAttribute("shape-rendering", "crispEdges");
    svg.setAttribute("class", "qr");
    const background = document.createElementNS(ns, "rect");
    background.setAttribute("width", size);
    background.setAttribute("height", size);
    background.setAttribute("fill", "#fff");
    const modules = document.createElementNS(ns, "path");
    modules.setAttribute("d", path);
    modules.setAttribute("fill", "#000");
    svg.append(background, modules);
    return svg;
  }

  /** A Code 128 bar code of a string of digits, as an SVG element. */
  function barcodeSvg(digits, label) {
    const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    JsBarcode(svg, digits, { format: "CODE128C", displayValue: false, margin: 8, height: 70, width: 2 });
    svg.setAttribute("role", "img");
    svg.setAttribute("aria-label", label);
    svg.setAttribute("class", "barcode");
    return svg;
  }

  /** The QR code in a picture or camera frame (an ImageData), or null: `data` is its bytes read
   * as UTF-8 (as citypay and the EMVCo payloads of Chinese banks write them), `bytes` as they are. */
  function readQr(imageData) {
    const found = jsQR(imageData.data, imageData.width, imageData.height, { inversionAttempts: "attemptBoth" });
    if (!found) return null;
    const bytes = Uint8Array.from(found.binaryData);
    return { data: new TextDecoder("utf-8").decode(bytes), bytes };
  }

  /** Reads QR codes from the camera into `video` until `found` returns true or it is stopped. */
  async function scanCamera(video, found) {
    const stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "environment" }, audio: false });
    video.srcObject = stream;
    video.setAttribute("playsinline", "");
    await video.play();
    const canvas = document.createElement("canvas");
    const context = canvas.getContext("2d", { willReadFrequently: true });
    let stopped = false;
    const stop = () => {
      stopped = true;
      stream.getTracks().forEach((track) => track.stop());
      video.srcObject = null;
    };
    const tick = () => {
      if (stopped) return;
      if (video.readyState >= video.HAVE_CURRENT_DATA && video.videoWidth > 0) {
        canvas.width = video.videoWidth;
        canvas.height = video.videoHeight;
        context.drawImage(video, 0, 0);
        const code = readQr(context.getImageData(0, 0, canvas.width, canvas.height));
        if (code && found(code)) {
          stop();
          return;
        }
      }
      setTimeout(tick, 120);
    };
    tick();
    return stop;
  }

  /** The QR code in a picture file the user chose, or null. */
  async function readQrFromFile(file) {
    const bitmap = await createImageBitmap(file);
    const canvas = document.createElement("canvas");
    canvas.width = bitmap.width;
    canvas.height = bitmap.height;
    const context = canvas.getContext("2d");
    context.drawImage(bitmap, 0, 0);
    return readQr(context.getImageData(0, 0, canvas.width, canvas.height));
  }

  /** Says `message` to screen readers and shows it in the status line. */
  function announce(message, kind) {
    const status = document.getElementById("status");
    status.textContent = message;
    status.className = "status" + (kind ? " " + kind : "");
  }

  /** Hex to bytes. */
  function unhex(text) {
    const bytes = new Uint8Array(text.length / 2);
    for (let i = 0; i < bytes.length; i += 1) bytes[i] = parseInt(text.substr(2 * i, 2), 16);
    return bytes;
  }

  /** Bytes to hex. */
  function hex(bytes) {
    return Array.from(new Uint8Array(bytes), (b) => b.toString(16).padStart(2, "0")).join("");
  }

  /** A small key-value store in IndexedDB: it keeps CryptoKey objects (non-extractable keys
   * survive there without their secret ever being readable by a script). */
  function store(name) {
    const opened = new Promise((resolve, reject) => {
      const request = indexedDB.open(name, 1);
      request.onupgradeneeded = () => request.result.createObjectStore("kv");
      request.onsuccess = () => resolve(request.result);
      request.onerror = () => reject(request.error);
    });
    const run = (mode, action) =>
      opened.then(
        (db) =>
          new Promise((resolve, reject) => {
            const request = action(db.transaction("kv", mode).objectStore("kv"));
            request.onsuccess = () => resolve(request.result);
            request.onerror = () => reject(request.error);
          }),
      );
    return {
      get: (key) => run("readonly", (kv) => kv.get(key)),
      put: (key, value) => run("readwrite", (kv) => kv.put(value, key)),
      delete: (key) => run("readwrite", (kv) => kv.delete(key)),
    };
  }

  return { ApiError, api, newKey, yuan, money, parseYuan, languages, el, qrSvg, barcodeSvg, readQr, scanCamera, readQrFromFile, announce, unhex, hex, store };
})();
