// The API's own small page: list conversations, start one, end one.
// Every call goes to /v2 with the x-api-key the user typed (kept in localStorage).
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const KEY_STORE = "open-cvi-api-key";

  async function api(method, path, body) {
    const response = await fetch(path, {
      method,
      headers: { "x-api-key": localStorage.getItem(KEY_STORE) || "", "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (response.status === 204) return null;
    const data = await response.json();
    if (!response.ok) throw new Error(`${response.status}: ${data.error || response.statusText}`);
    return data;
  }

  function cell(row, text) {
    const td = document.createElement("td");
    td.textContent = text ?? "";
    row.appendChild(td);
    return td;
  }

  async function refresh() {
    $("error").textContent = "";
    try {
      const list = await api("GET", "/v2/conversations?limit=50");
      const body = $("conversations");
      body.replaceChildren();
      for (const c of list.data) {
        const row = document.createElement("tr");
        row.dataset.conversationId = c.conversation_id;
        cell(row, c.conversation_id);
        cell(row, c.conversation_name);
        cell(row, c.persona_id);
        cell(row, c.replica_id);
        cell(row, c.status);
        cell(row, new Date(c.created_at).toLocaleString());
        const actions = cell(row, "");
        if (c.status === "active" && c.conversation_url) {
          const open = document.createElement("a");
          open.href = c.conversation_url;
          open.target = "_blank";
          open.textContent = "open";
          actions.appendChild(open);
          const end = document.createElement("button");
          end.textContent = "end";
          end.className = "end";
          end.onclick = async () => { await api("POST", `/v2/conversations/${c.conversation_id}/end`); refresh(); };
          actions.appendChild(end);
        }
        body.appendChild(row);
      }
      $("key-state").textContent = `${list.total_count} conversation(s)`;
    } catch (e) {
      $("error").textContent = e.message;
    }
  }

  async function loadChoices() {
    try {
      const personas = await api("GET", "/v2/personas?limit=100");
      $("persona").replaceChildren(...personas.data.map((p) => new Option(`${p.persona_name} (${p.persona_id})`, p.persona_id)));
      const replicas = await api("GET", "/v2/replicas?limit=100");
      $("replica").replaceChildren(new Option("(the persona's)", ""), ...replicas.data.map((r) => new Option(r.replica_name, r.replica_id)));
    } catch (e) {
      $("error").textContent = e.message;
    }
  }

  $("save-key").onclick = () => {
    localStorage.setItem(KEY_STORE, $("key").value.trim());
    $("key").value = "";
    loadChoices();
    refresh();
  };
  $("refresh").onclick = refresh;
  $("start").onsubmit = async (event) => {
    event.preventDefault();
    $("error").textContent = "";
    const body = { persona_id: $("persona").value };
    if ($("replica").value) body.replica_id = $("replica").value;
    if ($("name").value) body.conversation_name = $("name").value;
    if ($("greeting").value) body.custom_greeting = $("greeting").value;
    try {
      const created = await api("POST", "/v2/conversations", body);
      const link = document.createElement("a");
      link.href = created.conversation_url;
      link.target = "_blank";
      link.textContent = created.conversation_url;
      $("started").replaceChildren("Started: ", link);
      refresh();
    } catch (e) {
      $("error").textContent = e.message;
    }
  };
  loadChoices();
  refresh();
})();
