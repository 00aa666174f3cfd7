// The review page: fetches one user's review from /api/users/{id} and draws it; without a user,
// the overview (/api/overview, /api/user-list), and with ?item=, the users citing that item.
// Item titles, labels and explanations come from users and models, so text only ever goes
// into the page through textContent (never innerHTML).

const SVG = "http://www.w3.org/2000/svg";
const PALETTE = ["#3b6ea8", "#e07b39", "#4f9a5d", "#b8514e", "#7d62a8", "#a07a4f", "#c86aa0"];

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "className") node.className = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return node;
}

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

const percent = (value) => `${(value * 100).toFixed(value < 0.1 ? 1 : 0)}%`;
const when = (iso) => new Date(iso).toLocaleString();

function setStatus(text, isError = false) {
  const status = document.getElementById("status");
  status.textContent = text;
  status.classList.toggle("error", isError);
  status.hidden = text === "";
}

// Links ----------------------------------------------------------------------------------

const userHref = (userId) => `/?user=${encodeURIComponent(userId)}`;

function userLink(userId) {
  return el("a", { href: userHref(userId), className: "user-link", "data-user": userId }, userId);
}

// An item's title, linking to the users whose trees cite the item.
function itemLink(item) {
  return el(
    "a",
    {
      href: `/?item=${encodeURIComponent(item.item_id)}`,
      className: "item-link",
      "data-item": item.item_id,
      title: "users whose trees cite this item",
    },
    item.title,
  );
}

// Tree ------------------------------------------------------------------------------------

function nodeCard(node, children) {
  const bar = el("span", { className: "weight-bar" });
  bar.append(el("span", { className: "weight-fill" }));
  bar.firstChild.style.width = percent(node.weight);
  const header = el(
    "div",
    { className: "node-header" },
    el("span", { className: "node-label" }, node.label),
    el("span", { className: "weight", title: "share of its level" }, percent(node.weight)),
    bar,
    el(
      "span",
      { className: `source source-${node.label_source}`, title: "where the label came from" },
      `label: ${node.label_source}`,
    ),
  );
  const evidence = el("ul", { className: "evidence", "aria-label": "evidence" });
  for (const item of node.evidence) evidence.append(el("li", {}, itemLink(item)));
  const item = el(
    "li",
    { className: `node level-${node.level}`, id: `node-${node.id}`, "data-node-id": node.id },
    el(
      "div",
      { className: "node-card" },
      header,
      el("p", { className: "explanation" }, node.explanation),
      el("div", { className: "evidence-heading" }, `Evidence (${node.evidence.length})`),
      evidence,
    ),
  );
  if (children.length) {
    const list = el("ul", { className: "tree-level" });
    list.append(...children);
    item.append(list);
  }
  return item;
}

function drawTree(nodes) {
  const byParent = new Map();
  for (const node of nodes) {
    const key = node.parent_id || "";
    if (!byParent.has(key)) byParent.set(key, []);
    byParent.get(key).push(node);
  }
  const build = (parent) =>
    (byParent.get(parent) || [])
      .slice()
      .sort((a, b) => b.weight - a.weight)
      .map((node) => nodeCard(node, build(node.id)));
  const root = el("ul", { className: "tree-level root" });
  root.append(...build(""));
  document.getElementById("tree").replaceChildren(root);
}

// Chart -----------------------------------------------------------------------------------

function drawChart(levels) {
  const width = 440;
  const rowHeight = 46;
  const levelBar = 90;
  const shareX = 150;
  const shareWidth = width - shareX - 4;
  const top = 22;
  const chart = svg("svg", {
    viewBox: `0 0 ${width} ${top + levels.length * rowHeight}`,
    role: "img",
    "aria-label": "Weight of each level and of each interest within its level",
    class: "weights-chart",
  });
  chart.append(
    svg("text", { x: 0, y: 12, class: "axis" }, "level weight w"),
    svg("text", { x: shareX, y: 12, class: "axis" }, "interests within the level"),
  );
  const maxWeight = Math.max(...levels.map((level) => level.level_weight), 1e-9);
  levels.forEach((level, row) => {
    const y = top + row * rowHeight;
    const group = svg("g", { class: "chart-row", "data-level": level.level });
    const w = (level.level_weight / maxWeight) * levelBar;
    group.append(
      svg("text", { x: 0, y: y + 12, class: "row-label" }, `Level ${level.level}`),
      svg("rect", { x: 0, y: y + 18, width: levelBar, height: 16, class: "track" }),
      svg("rect", { x: 0, y: y + 18, width: Math.max(w, 1), height: 16, class: "level-bar" }),
      svg("text", { x: levelBar + 6, y: y + 30, class: "value" }, level.level_weight.toFixed(2)),
    );
    let x = shareX;
    level.nodes.forEach((node, index) => {
      const span = node.weight * shareWidth;
      const segment = svg("rect", {
        x,
        y: y + 6,
        width: Math.max(span - 1, 0.5),
        height: 28,
        fill: PALETTE[index % PALETTE.length],
        class: "share",
      });
      segment.append(svg("title", {}, `${node.label}: ${percent(node.weight)}`));
      group.append(segment);
      if (span > 44) {
        const label = node.label.length * 6.2 > span - 6 ? `${percent(node.weight)}` : node.label;
        group.append(svg("text", { x: x + 4, y: y + 24, class: "share-label" }, label));
      }
      x += span;
    });
    chart.append(group);
  });
  document.getElementById("chart").replaceChildren(chart);
}

// Recommendations -------------------------------------------------------------------------

function highlight(nodeId) {
  const target = document.getElementById(`node-${nodeId}`);
  if (!target) return;
  target.scrollIntoView({ behavior: "smooth", block: "center" });
  target.classList.add("highlight");
  setTimeout(() => target.classList.remove("highlight"), 2000);
}

function drawRecommendations(review) {
  const list = document.getElementById("recommendations");
  const error = document.getElementById("recs-error");
  error.hidden = !review.recommendations_error;
  error.textContent = review.recommendations_error || "";
  list.replaceChildren(
    ...review.recommendations.map((rec) => {
      const nodes = el("ul", { className: "attribution", "aria-label": "brought by" });
      for (const node of rec.nodes) {
        const chip = el(
          "button",
          { type: "button", className: "chip", "data-node-id": node.id, "data-level": node.level },
          el("span", { className: "chip-label" }, node.label),
          el("span", { className: "chip-meta" }, `L${node.level} · ${node.contribution.toFixed(3)}`),
        );
        chip.addEventListener("click", () => highlight(node.id));
        nodes.append(el("li", {}, chip));
      }
      return el(
        "li",
        { className: "recommendation", "data-item": rec.item_id },
        el(
          "div",
          { className: "rec-header" },
          el("span", { className: "rec-title" }, itemLink(rec)),
          el("span", { className: "score", title: "similarity to the fused vector" }, rec.score.toFixed(3)),
        ),
        el("p", { className: "reason" }, rec.reason),
        nodes,
      );
    }),
  );
}

// Revisions -------------------------------------------------------------------------------

function changeList(title, entries, describe) {
  if (!entries.length) return null;
  const list = el("ul");
  for (const entry of entries) list.append(el("li", {}, describe(entry)));
  return el("div", { className: "change" }, el("h4", {}, title), list);
}

function sentence(text) {
  return text.charAt(0).toUpperCase() + text.slice(1);
}

// A diff's node with its ancestors ("Books › Fiction › Mystery"), so that two nodes of one
// label and level are told apart; `label` replaces the node's own (a relabeled node's old one).
function nodePath(node, label = node.label) {
  return [...(node.path || []), label].join(" › ");
}

function titles(items) {
  return items.map((item) => item.title).join("; ");
}

function drawRevisions(review) {
  const list = document.getElementById("revisions");
  list.replaceChildren(
    ...review.revisions.map((revision) => {
      const facts = [
        when(revision.create_time),
        `${revision.event_count} events`,
        `${revision.node_count} interests`,
        revision.model ? `named by ${revision.model}` : "named from the data",
      ];
      if (revision.build_stats && revision.build_stats.model_requests) {
        const stats = revision.build_stats;
        facts.push(
          `${stats.model_requests} model requests, ${stats.prompt_tokens + stats.completion_tokens} tokens`,
        );
      }
      const body = el("div", { className: "changes" });
      const changes = revision.changes;
      if (!changes) {
        // The first revision, or one whose predecessor is not at hand: the server's summary
        // (the API's wording too) is all there is to say.
        body.append(el("p", { className: "summary" }, `${sentence(revision.summary)}.`));
      } else {
        body.append(el("p", { className: "summary" }, `Changes: ${changes.summary}.`));
        for (const part of [
          changeList("Added", changes.added, (n) => `${nodePath(n)} (level ${n.level})`),
          changeList("Removed", changes.removed, (n) => `${nodePath(n)} (level ${n.level})`),
          changeList("Relabeled", changes.relabeled, (n) => `${nodePath(n, n.before)} → ${n.label}`),
          changeList(
            "Reweighted",
            changes.reweighted,
            (n) => `${nodePath(n)}: ${percent(n.before)} → ${percent(n.after)}`,
          ),
          changeList("Evidence", changes.evidence_changed, (n) =>
            [
              `${nodePath(n)}:`,
              n.gained.length ? ` + ${titles(n.gained)}` : "",
              n.lost.length ? ` − ${titles(n.lost)}` : "",
            ].join(""),
          ),
        ]) {
          if (part) body.append(part);
        }
      }
      return el(
        "li",
        { className: "revision", "data-revision": String(revision.revision) },
        el(
          "div",
          { className: "revision-header" },
          el("span", { className: "revision-number" }, `Revision ${revision.revision}`),
          el("span", { className: "revision-facts" }, facts.join(" · ")),
        ),
        body,
      );
    }),
  );
  if (review.more_revisions) list.append(el("li", { className: "more" }, "Older revisions exist."));
}

// Page ------------------------------------------------------------------------------------

function drawSummary(review) {
  const tree = review.tree;
  document.getElementById("summary").replaceChildren(
    el("h2", {}, review.user),
    el(
      "p",
      {},
      `Tree revision ${tree.revision}, built ${when(tree.create_time)} from ${tree.event_count} events; ` +
        `${tree.nodes.length} interests on ${review.levels.length} levels; ` +
        (tree.model ? `labels checked from ${tree.model}.` : "labels from the catalog data."),
    ),
  );
}

// Level weights -----------------------------------------------------------------------------

function drawWeightControls(userId, levels) {
  const inputs = levels.map((level) =>
    el("input", {
      type: "range",
      min: "0",
      max: "1",
      step: "0.05",
      value: String(level.level_weight),
      id: `weight-${level.level}`,
      "aria-label": `Weight of level ${level.level}`,
    }),
  );
  const values = inputs.map((input) => el("output", { for: input.id }, input.value));
  const apply = el("button", { type: "button", id: "apply-weights" }, "Recommend with these weights");
  const rows = inputs.map((input, index) => {
    input.addEventListener("input", () => (values[index].textContent = input.value));
    return el("label", { className: "weight" }, `Level ${index + 1} `, input, " ", values[index]);
  });
  apply.addEventListener("click", () => reweigh(userId, inputs.map((input) => Number(input.value))));
  document.getElementById("weight-controls").replaceChildren(...rows, apply);
}

async function reweigh(userId, weights) {
  if (!weights.some((weight) => weight > 0)) {
    setStatus("Give at least one level a weight above 0.", true);
    return;
  }
  const body = await fetchReview(userId, weights);
  if (!body || !body.tree) return;
  drawChart(body.levels);
  drawRecommendations(body);
  setStatus("");
  document.body.dataset.weights = weights.join(",");
}

// With `--require-auth` the JSON API takes the same Bearer key as the gRPC port (reader role).
// The key is asked for once per tab and kept in sessionStorage, never in the URL or a cookie.
const KEY_STORAGE = "interest-tree-api-key";

async function apiFetch(url) {
  const send = (key) => fetch(url, key ? { headers: { Authorization: `Bearer ${key}` } } : {});
  const used = sessionStorage.getItem(KEY_STORAGE);
  let response = await send(used);
  if (response.status !== 401) return response;
  // Another request may have asked for the key meanwhile: try that one before asking.
  let key = sessionStorage.getItem(KEY_STORAGE);
  if (!key || key === used) {
    key = (window.prompt("This service needs an API key (reader role):") || "").trim();
    if (!key) return response;
    sessionStorage.setItem(KEY_STORAGE, key);
  }
  return send(key);
}

async function fetchReview(userId, weights) {
  const query = weights ? `?level_weights=${weights.join(",")}` : "";
  let response;
  try {
    response = await apiFetch(`/api/users/${encodeURIComponent(userId)}${query}`);
  } catch (error) {
    setStatus(`Could not reach the service: ${error.message}`, true);
    return null;
  }
  const body = await response.json();
  if (!response.ok) {
    setStatus(body.error || `HTTP ${response.status}`, true);
    return null;
  }
  return body;
}

async function review(userId) {
  setStatus(`Loading ${userId}…`);
  const body = await fetchReview(userId, null);
  if (!body) {
    showOnly(null);
    return;
  }
  if (!body.tree) {
    showOnly(null);
    setStatus(`${body.user} has events but no interest tree yet.`);
    return;
  }
  drawSummary(body);
  drawTree(body.tree.nodes);
  drawChart(body.levels);
  drawWeightControls(userId, body.levels);
  drawRecommendations(body);
  drawRevisions(body);
  showOnly("review");
  setStatus("");
  document.body.dataset.loaded = userId;
}

// Overview --------------------------------------------------------------------------------

async function getJson(url) {
  let response;
  try {
    response = await apiFetch(url);
  } catch (error) {
    setStatus(`Could not reach the service: ${error.message}`, true);
    return null;
  }
  const body = await response.json();
  if (!response.ok) {
    setStatus(body.error || `HTTP ${response.status}`, true);
    return null;
  }
  return body;
}

function showOnly(id) {
  for (const section of ["overview", "item-view", "review"]) {
    document.getElementById(section).hidden = section !== id;
  }
}

const USERS_PAGE = 25;
let userSearch = { search: "", offset: 0 };

async function drawUserPage() {
  const { search, offset } = userSearch;
  const query = `search=${encodeURIComponent(search)}&offset=${offset}&limit=${USERS_PAGE}`;
  const body = await getJson(`/api/user-list?${query}`);
  if (!body) return;
  // A newer search may have started meanwhile: draw only the latest.
  if (search !== userSearch.search || offset !== userSearch.offset) return;
  const list = document.getElementById("user-list");
  list.replaceChildren(...body.users.map((userId) => el("li", {}, userLink(userId))));
  if (!body.users.length) list.append(el("li", { className: "empty" }, "No user matches."));
  const last = body.offset + body.users.length;
  document.getElementById("users-page").textContent = body.total
    ? `${body.offset + 1}–${last} of ${body.total}`
    : "0 of 0";
  document.getElementById("users-prev").disabled = body.offset === 0;
  document.getElementById("users-next").disabled = body.next_offset === null;
  document.body.dataset.userPage = `${search}:${body.offset}`;
}

async function showOverview() {
  setStatus("Loading the overview…");
  const body = await getJson("/api/overview");
  if (!body) return;
  const counts = document.getElementById("counts");
  counts.replaceChildren(
    ...["items", "users", "events"].map((name) =>
      el(
        "div",
        { "data-count": name },
        el("dt", {}, name),
        el("dd", {}, body.counts[name].toLocaleString("en")),
      ),
    ),
  );
  const recent = document.getElementById("recent");
  recent.replaceChildren(
    ...body.recent.map((tree) =>
      el(
        "li",
        { "data-user": tree.user_id },
        userLink(tree.user_id),
        el(
          "span",
          { className: "recent-meta" },
          `revision ${tree.revision} · ${tree.node_count} interests · built ${when(tree.create_time)}`,
        ),
      ),
    ),
  );
  if (!body.recent.length) recent.append(el("li", { className: "empty" }, "No tree built yet."));
  await drawUserPage();
  showOnly("overview");
  setStatus("");
  document.body.dataset.loaded = "overview";
}

async function showItem(itemId) {
  setStatus(`Loading ${itemId}…`);
  const body = await getJson(`/api/items/${encodeURIComponent(itemId)}/users`);
  if (!body) {
    showOnly(null);
    return;
  }
  const title = body.item.exists ? body.item.title : `${itemId} (not in the catalog)`;
  document.getElementById("item-heading").textContent = `Cited by: ${title}`;
  const list = document.getElementById("citing");
  list.replaceChildren(
    ...body.users.map((user) =>
      el(
        "li",
        { "data-user": user.user_id },
        userLink(user.user_id),
        el("span", { className: "citing-nodes" }, user.nodes.join("; ")),
      ),
    ),
  );
  if (!body.users.length) list.append(el("li", { className: "empty" }, "No tree cites this item."));
  if (body.more) list.append(el("li", { className: "more" }, "More users cite it."));
  showOnly("item-view");
  setStatus("");
  document.body.dataset.loaded = `item:${itemId}`;
}

function startOverview() {
  const search = document.getElementById("user-search");
  const form = document.getElementById("user-search-form");
  const searchNow = () => {
    userSearch = { search: search.value.trim(), offset: 0 };
    drawUserPage();
  };
  search.addEventListener("input", searchNow);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    searchNow();
  });
  document.getElementById("users-prev").addEventListener("click", () => {
    userSearch = { ...userSearch, offset: Math.max(0, userSearch.offset - USERS_PAGE) };
    drawUserPage();
  });
  document.getElementById("users-next").addEventListener("click", () => {
    userSearch = { ...userSearch, offset: userSearch.offset + USERS_PAGE };
    drawUserPage();
  });
}

async function suggest(prefix) {
  try {
    const response = await apiFetch(`/api/users?prefix=${encodeURIComponent(prefix)}`);
    if (!response.ok) return;
    const { users } = await response.json();
    document
      .getElementById("user-suggestions")
      .replaceChildren(...users.map((user) => el("option", { value: user })));
  } catch {
    // Suggestions are a convenience; the lookup itself reports errors.
  }
}

function start() {
  const form = document.getElementById("lookup");
  const input = document.getElementById("user");
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const userId = input.value.trim().replace(/^users\//, "");
    if (!userId) return;
    const url = new URL(window.location.href);
    url.searchParams.set("user", userId);
    window.history.pushState({}, "", url);
    review(userId);
  });
  input.addEventListener("input", () => suggest(input.value.trim()));
  startOverview();
  const fromUrl = () => {
    const params = new URL(window.location.href).searchParams;
    const userId = params.get("user");
    const itemId = params.get("item");
    if (userId) {
      input.value = userId;
      review(userId);
    } else if (itemId) {
      showItem(itemId);
    } else {
      showOverview();
    }
  };
  window.addEventListener("popstate", fromUrl);
  suggest("");
  fromUrl();
}

start();
