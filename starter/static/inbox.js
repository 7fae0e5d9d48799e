// Podium approvals inbox: vanilla JS, no build step, no dependencies.
//
// The API knows who you are from your bearer token (the Token field, kept in sessionStorage for
// this tab only); the query string (?role=team_lead&approver=bob) picks the inbox to show and
// must match the token to decide. Every piece of data is written with textContent (never innerHTML), so
// whatever a customer or an approver typed is shown as text, never run.
"use strict";

(() => {
  const LIST_REFRESH_MS = 30_000;
  const TICK_MS = 15_000;

  const $ = (id) => document.getElementById(id);
  const params = new URLSearchParams(window.location.search);
  const who = {
    role: (params.get("role") || "").trim(),
    approver: (params.get("approver") || "").trim(),
  };
  const TOKEN_KEY = "podium.token";
  const token = () => (window.sessionStorage.getItem(TOKEN_KEY) || "").trim();

  let items = [];
  let fetchedAt = 0; // performance.now() when `items` arrived
  let openCase = null; // case id shown in the detail panel
  let openView = null;
  let decisionIds = new Map(); // decision fingerprint -> decision id (retries reuse it)

  // --- small helpers ------------------------------------------------------------------------

  function el(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (className) node.className = className;
    return node;
  }

  function say(id, text, kind) {
    const node = $(id);
    node.textContent = text || "";
    node.className = kind || "";
  }

  function money(dollars) {
    if (dollars === null || dollars === undefined) return "-";
    return "$" + Number(dollars).toLocaleString("en-US", {
      minimumFractionDigits: 2,
      maximumFractionDigits: 2,
    });
  }

  function duration(seconds) {
    let minutes = Math.floor(Math.abs(seconds) / 60);
    const days = Math.floor(minutes / 1440);
    minutes -= days * 1440;
    const hours = Math.floor(minutes / 60);
    minutes -= hours * 60;
    if (days) return `${days}d ${hours}h`;
    if (hours) return `${hours}h ${String(minutes).padStart(2, "0")}m`;
    return `${minutes}m`;
  }

  function timeLeft(seconds) {
    if (seconds === null || seconds === undefined) return "-";
    return seconds >= 0 ? duration(seconds) : `overdue ${duration(seconds)}`;
  }

  function stamp(iso) {
    if (!iso) return "-";
    const date = new Date(iso);
    return Number.isNaN(date.getTime()) ? String(iso) : date.toLocaleString();
  }

  function randomId() {
    const bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    return "web-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function problemText(status, body) {
    if (body && typeof body === "object") {
      const errors = Array.isArray(body.errors) ? body.errors : [];
      if (errors.length) {
        return `${body.title || "Invalid request"}: ` +
          errors.map((e) => `${e.field}: ${e.message}`).join("; ");
      }
      if (body.title) return body.detail ? `${body.title}: ${body.detail}` : String(body.title);
    }
    return `HTTP ${status}`;
  }

  async function call(method, path, body) {
    const init = { method, headers: { Accept: "application/json" } };
    if (token()) init.headers.Authorization = `Bearer ${token()}`;
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    // Relative to the page (/inbox): works behind a path prefix too.
    const response = await fetch(new URL(path, document.baseURI), init);
    let data = null;
    try {
      data = await response.json();
    } catch {
      data = null;
    }
    if (!response.ok) throw new Error(problemText(response.status, data));
    return data;
  }

  // --- the list -----------------------------------------------------------------------------

  function leftNow(item) {
    if (item.time_left_s === null || item.time_left_s === undefined) return null;
    return item.time_left_s - (performance.now() - fetchedAt) / 1000;
  }

  function renderList() {
    const body = $("items");
    body.replaceChildren();
    for (const item of items) {
      const row = el("tr");
      row.dataset.caseId = item.case_id;
      if (item.case_id === openCase) row.setAttribute("aria-current", "true");
      const open = el("button", item.case_id, "link");
      open.type = "button";
      open.addEventListener("click", () => openApproval(item.case_id));
      const first = el("td");
      first.append(open);
      if (item.escalated) first.append(" ", el("span", "escalated", "badge"));
      const left = leftNow(item);
      const leftCell = el("td", timeLeft(left), "left");
      if (left !== null && left < 0) leftCell.classList.add("overdue");
      row.append(
        first,
        el("td", money(item.amount), "num"),
        el("td", item.tier || "-"),
        el("td", item.intent || "-"),
        el("td", item.level ?? "-"),
        el("td", stamp(item.sla_due_at)),
        leftCell,
      );
      body.append(row);
    }
  }

  async function loadList() {
    if (!token()) {
      say("list-status", "Paste your token (Token) above to see your inbox.");
      return;
    }
    const query = new URLSearchParams();
    if (who.role) query.set("role", who.role);
    if (who.approver) query.set("approver", who.approver);
    try {
      const inbox = await call("GET", "approvals?" + query.toString());
      items = Array.isArray(inbox.items) ? inbox.items : [];
      fetchedAt = performance.now();
      renderList();
      const whom = [who.role, who.approver].filter(Boolean).join(" / ") || "everyone";
      const count = items.length === 1 ? "1 approval" : `${items.length} approvals`;
      const more = inbox.truncated ? " (more than could be scanned: the most urgent shown)" : "";
      say("list-status", items.length
        ? `${count} waiting for ${whom}, most urgent first${more}.`
        : `Nothing is waiting for ${whom}.`);
    } catch (err) {
      say("list-status", `Could not load the inbox: ${err.message}`, "error");
    }
  }

  // --- one approval ---------------------------------------------------------------------------

  function fact(list, label, value) {
    list.append(el("dt", label), el("dd", value === null || value === undefined ? "-" : value));
  }

  function renderDetail(view) {
    const request = view.request;
    $("detail-title").textContent = `Case ${view.case_id}`;
    $("detail-summary").textContent = view.summary || "";

    const facts = $("facts");
    facts.replaceChildren();
    fact(facts, "Process", view.title || view.process);
    if (view.customer_id) {
      const tier = view.customer_tier ? ` (${view.customer_tier})` : "";
      fact(facts, "Customer", `${view.customer_id}${tier}`);
    }
    if (view.order_id) fact(facts, "Order", view.order_id);
    for (const f of view.facts || []) fact(facts, f.label, f.value);
    fact(facts, "Amount asked", money(view.amount_cents == null ? null : view.amount_cents / 100));
    if (request.amount_cents != null && request.amount_cents !== view.amount_cents) {
      fact(facts, "Amount now", money(request.amount_cents / 100));
    }
    fact(facts, "Requested by", request.requested_by);
    fact(facts, "Level", `${request.level}/${view.levels.length} ${request.level_name}`);
    fact(facts, "Waiting for", view.waiting_for.join(", ") || "-");
    const left = view.time_left_s == null ? "" : ` (${timeLeft(view.time_left_s)})`;
    fact(facts, "SLA due", stamp(request.sla_due_at) + left);
    fact(facts, "Deadline", stamp(request.deadline_at));
    fact(facts, "Status", view.pending
      ? (request.escalated ? "waiting, escalated" : "waiting")
      : `${request.status}${view.outcome ? `, outcome ${view.outcome}` : ""}`);

    const ai = view.ai || {};
    const parts = [ai.recommendation || request.recommendation || "-"];
    if (ai.risk) parts.push(`${ai.risk} risk`);
    if (ai.intent) {
      const confidence = ai.intent_confidence == null
        ? ""
        : ` (confidence ${Math.round(ai.intent_confidence * 100)}%)`;
      parts.push(`intent ${ai.intent}${confidence}`);
    }
    if (ai.sentiment) parts.push(`sentiment ${ai.sentiment}`);
    $("recommendation").textContent = parts.join(" · ");

    const reasons = $("reasons");
    reasons.replaceChildren(...(ai.reasons || request.reasons || []).map((r) => el("li", r)));
    $("message").textContent = view.message || "(not available)";

    const decisions = $("decisions");
    const records = request.decisions || [];
    decisions.replaceChildren(...records.map((d) => {
      const why = d.reason || d.comment;
      let what = String(d.action).replace("_", " ");
      if (d.new_amount_cents != null) what += ` to ${money(d.new_amount_cents / 100)}`;
      if (d.delegate_to) what += ` to ${d.delegate_to}`;
      const roles = (d.approver_roles || []).join(", ") || "no role";
      return el("li", `${stamp(d.decided_at)} · ${d.level_name}: ${what} by ${d.approver}` +
        ` (${d.as_delegate ? "delegate" : roles})` + (why ? ` — ${why}` : ""));
    }));
    if (!records.length) decisions.append(el("li", "none yet", "muted"));

    const form = $("decide");
    form.hidden = !view.pending;
    const note = $("decide-note");
    const blocker = whyNot(view);
    note.hidden = !blocker;
    note.textContent = blocker;
    for (const id of ["approve", "reject", "request-changes"]) $(id).disabled = Boolean(blocker);
    $("detail").hidden = false;
  }

  function whyNot(view) {
    // The case checks every decision itself; this only spares a refusal everyone can foresee.
    if (!who.approver) return "Enter your name (You) above to decide.";
    const waiting = (view.waiting_for || []).map((w) => w.toLowerCase());
    const mine = [who.role, `user:${who.approver}`].filter(Boolean).map((w) => w.toLowerCase());
    if (!mine.some((w) => waiting.includes(w))) {
      return `Waiting for ${view.waiting_for.join(", ") || "nobody"}: not for you at this level.`;
    }
    return "";
  }

  async function openApproval(caseId) {
    openCase = caseId;
    decisionIds = new Map();
    for (const id of ["comment", "reject-reason", "changes-reason", "new-amount"]) $(id).value = "";
    say("decide-status", "");
    renderList();
    try {
      openView = await call("GET", "approvals/" + encodeURIComponent(caseId));
      if (openCase === caseId) renderDetail(openView);
    } catch (err) {
      say("decide-status", `Could not open ${caseId}: ${err.message}`, "error");
      $("detail").hidden = false;
      $("decide").hidden = true;
    }
  }

  // --- deciding -------------------------------------------------------------------------------

  function decisionId(verb, body) {
    // The same decision sent again (e.g. after a network error) reuses its id: the case
    // answers with the first result instead of deciding twice.
    const key = `${openCase}|${verb}|${JSON.stringify(body)}`;
    if (!decisionIds.has(key)) decisionIds.set(key, randomId());
    return decisionIds.get(key);
  }

  function outcomeText(result) {
    if (result.gate === "open") {
      const next = (result.waiting_for || []).join(", ") || "the next level";
      return `Recorded at level ${result.level_name}; now waiting for ${next}.`;
    }
    const effects = Object.entries(result.effects || {})
      .map(([name, value]) => `, ${name.replace(/_id$/, "").replace(/_/g, " ")} ${value}`)
      .join("");
    return `Done: ${result.gate}, outcome ${result.outcome || "-"}${effects}.`;
  }

  async function decide(verb, extra) {
    if (!openCase || !openView) return;
    const body = {
      approver: who.approver,
      roles: who.role ? [who.role] : [],
      comment: $("comment").value.trim() || null,
      request_id: openView.request.request_id,
      ...extra,
    };
    body.decision_id = decisionId(verb, body);
    const buttons = ["approve", "reject", "request-changes"].map($);
    buttons.forEach((b) => { b.disabled = true; });
    say("decide-status", "Sending your decision…");
    const caseId = openCase;
    try {
      const result = await call("POST", `cases/${encodeURIComponent(caseId)}/${verb}`, body);
      say("decide-status", outcomeText(result), "ok");
      for (const id of ["comment", "reject-reason", "changes-reason", "new-amount"]) {
        $(id).value = "";
      }
      await loadList();
      if (openCase === caseId) {
        openView = await call("GET", "approvals/" + encodeURIComponent(caseId));
        renderDetail(openView);
      }
    } catch (err) {
      say("decide-status", `Not decided: ${err.message}`, "error");
    } finally {
      const blocked = Boolean(openView && whyNot(openView));
      buttons.forEach((b) => { b.disabled = blocked; });
    }
  }

  function wire() {
    $("role").value = who.role;
    $("approver").value = who.approver;
    $("token").value = token();
    $("who").addEventListener("submit", (event) => {
      event.preventDefault();
      const entered = $("token").value.trim();
      if (entered) window.sessionStorage.setItem(TOKEN_KEY, entered);
      else window.sessionStorage.removeItem(TOKEN_KEY);
      const query = new URLSearchParams();
      const role = $("role").value.trim();
      const approver = $("approver").value.trim();
      if (role) query.set("role", role);
      if (approver) query.set("approver", approver);
      window.location.search = query.toString();
    });
    $("decide").addEventListener("submit", (event) => event.preventDefault());
    $("approve").addEventListener("click", () => decide("approve", {}));
    $("reject").addEventListener("click", () => {
      const reason = $("reject-reason").value.trim();
      if (!reason) {
        say("decide-status", "A rejection needs a reason: the requester is told.", "error");
        return;
      }
      decide("reject", { reason });
    });
    $("request-changes").addEventListener("click", () => {
      const amount = Number($("new-amount").value);
      if (!Number.isFinite(amount) || amount <= 0) {
        say("decide-status", "Enter the lower amount to approve, in dollars.", "error");
        return;
      }
      const reason = $("changes-reason").value.trim() || null;
      decide("request-changes", { amount: amount.toFixed(2), reason });
    });
  }

  wire();
  loadList();
  setInterval(loadList, LIST_REFRESH_MS);
  setInterval(renderList, TICK_MS);
})();
