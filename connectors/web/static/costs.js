// Costs on the page: the context's tokens and estimated cost before sending (POST
// /api/estimate, refreshed while typing), and each reply's real cost after it ("cost" events).

function money(usd) {
  if (usd == null) return "";
  if (usd > 0 && usd < 0.0001) return "<$0.0001";
  return usd >= 0.1 ? `$${usd.toFixed(2)}` : `$${usd.toFixed(4)}`;
}

const count = (n) => n.toLocaleString("en-US");

/** The estimate line under the composer, refreshed (debounced) by `soon()`. */
export function makeEstimate(api, el, current) {
  let timer = null;
  let seq = 0;

  async function refresh(text) {
    const mine = ++seq;
    let data;
    try {
      data = await api.call("POST", "/api/estimate", { text, conversation_id: current() ?? undefined });
    } catch (_) {
      return; // offline or not allowed: the line simply stays as it was
    }
    if (mine !== seq) return; // a newer estimate is on its way
    const tokens = `${data.estimated ? "≈ " : ""}${count(data.context_tokens)} tokens in context`;
    el.textContent = data.priced
      ? `${tokens} · ≈ ${money(data.input_usd)} to send, at most ${money(data.max_usd)} with the answer`
      : `${tokens} · no price known for ${data.model}`;
    el.title = data.prices_as_of ? `list prices as of ${data.prices_as_of}` : "";
    el.hidden = false;
  }

  return {
    soon(text = "") {
      clearTimeout(timer);
      timer = setTimeout(() => refresh(text), 400);
    },
  };
}

/** Show a reply's cost under it (the `cost` event's data). */
export function showCost(m, d) {
  if (!m || !m.node) return;
  let el = m.node.querySelector(".cost");
  if (!el) {
    el = document.createElement("div");
    el.className = "cost";
    m.node.appendChild(el);
  }
  const mark = d.estimated ? "≈ " : "";
  const price = d.cost_usd == null ? "" : ` · ${mark}${money(d.cost_usd)}`;
  el.textContent = `${mark}${count(d.input_tokens)} in · ${count(d.output_tokens)} out${price}`;
}
