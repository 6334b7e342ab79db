// Renders the admin API's OpenAPI document (served by the same listener) as a page: no
// framework, no CDN, nothing fetched but the document itself, so it works offline.
"use strict";

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

function schemaText(schema, doc, depth) {
  if (!schema) return "";
  if (schema.$ref) {
    const name = schema.$ref.split("/").pop();
    if (depth > 2) return name;
    return name + " " + schemaText(doc.components.schemas[name], doc, depth + 1);
  }
  if (schema.type === "object" && schema.properties) {
    const req = new Set(schema.required || []);
    const fields = Object.entries(schema.properties).map(([k, v]) =>
      "  ".repeat(depth + 1) + k + (req.has(k) ? "" : "?") + ": " + schemaText(v, doc, depth + 1));
    return "{\n" + fields.join("\n") + "\n" + "  ".repeat(depth) + "}";
  }
  if (schema.type === "array") return "[" + schemaText(schema.items, doc, depth) + "]";
  if (schema.anyOf) return schema.anyOf.map((s) => schemaText(s, doc, depth)).join(" | ");
  const bounds = ["minimum", "maximum", "maxLength", "pattern"]
    .filter((b) => b in schema).map((b) => b + " " + schema[b]);
  return (schema.type || "any") + (bounds.length ? " (" + bounds.join(", ") + ")" : "");
}

function parameters(op, doc) {
  if (!op.parameters || !op.parameters.length) return null;
  const rows = op.parameters.map((p) => el("tr", {},
    el("td", {}, el("code", {}, p.name)), el("td", {}, p.in),
    el("td", {}, schemaText(p.schema, doc, 0)), el("td", {}, p.description || "")));
  return el("table", {}, el("tr", {}, el("th", {}, "parameter"), el("th", {}, "in"),
    el("th", {}, "type"), el("th", {}, "description")), ...rows);
}

function operation(doc, path, method, op) {
  const box = el("div", {class: "op", id: op.operationId});
  const head = el("div", {}, el("span", {class: "method " + method.toUpperCase()}, method.toUpperCase()),
    el("span", {class: "path"}, path));
  if (op.security) head.append(el("span", {class: "lock"}, "bearer token"));
  box.append(head, el("p", {}, op.summary || ""));
  const params = parameters(op, doc);
  if (params) box.append(params);
  if (op.requestBody) {
    const media = op.requestBody.content["application/json"];
    box.append(el("p", {}, "Request body:"), el("pre", {}, schemaText(media.schema, doc, 0)));
  }
  const answers = Object.entries(op.responses).map(([status, r]) => {
    const media = r.content && Object.values(r.content)[0];
    return el("tr", {}, el("td", {}, status), el("td", {}, r.description || ""),
      el("td", {}, el("pre", {}, media ? schemaText(media.schema, doc, 0) : "")));
  });
  box.append(el("table", {class: "responses"}, el("tr", {}, el("th", {}, "status"),
    el("th", {}, "meaning"), el("th", {}, "body")), ...answers));
  return box;
}

async function main() {
  let doc;
  try {
    const resp = await fetch("/api/v1/openapi.json");
    if (!resp.ok) throw new Error("HTTP " + resp.status);
    doc = await resp.json();
  } catch (err) {
    document.getElementById("error").textContent = "Could not load the document: " + err.message;
    return;
  }
  document.getElementById("title").textContent = doc.info.title;
  document.getElementById("meta").replaceChildren(
    "Version " + doc.info.version + " \u00b7 OpenAPI " + doc.openapi + " \u00b7 ",
    el("a", {href: "/api/v1/openapi.json"}, "the document"),
    " \u00b7 operations marked \u201cbearer token\u201d need Authorization: Bearer <token>");
  const byTag = new Map();
  for (const [path, ops] of Object.entries(doc.paths)) {
    for (const [method, op] of Object.entries(ops)) {
      const tag = (op.tags && op.tags[0]) || "api";
      if (!byTag.has(tag)) byTag.set(tag, []);
      byTag.get(tag).push(operation(doc, path, method, op));
    }
  }
  const root = document.getElementById("ops");
  for (const [tag, boxes] of byTag) root.append(el("h2", {}, tag), ...boxes);
  document.body.setAttribute("data-rendered", String(root.querySelectorAll(".op").length));
}

main();
