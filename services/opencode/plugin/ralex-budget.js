// Ralex budget toasts for OpenCode: shows in the TUI when today's budget crosses an alert threshold,
// when the proxy steps a request down (tier or per-request cap) and when it refuses one (HTTP 402),
// and, when a turn ends having spent money, today's budget as the proxy's ledger has it (the proxy's
// one-line summary: spent, left, tier, reset). OpenCode's own "spent" cannot know which model Ralex
// picked, so the models carry no price in opencode.json and these numbers are the ones to read.
//
// It reads the proxy's read-only status (GET /ralex/status?since=<event id>, allowed with the agent
// key) once at start, every few seconds while a session is busy, and once more when it goes idle or
// fails. Each new event becomes a toast (client.tui.showToast), which every TUI attached to this
// directory shows, `ralexctl attach` included. Plain JavaScript with no imports: nothing to install,
// no network but the proxy. A proxy that is down or answers garbage is logged once and asked again
// at most every 10 s until it answers; nothing here may throw into OpenCode.

const SERVICE = "ralex-budget";
const BUSY_POLL_MS = 2000; // while a session works
const IDLE_POLL_MS = 60000; // otherwise (events of other clients, a budget changed by hand)
const DOWN_POLL_MS = 10000; // at most this often while the proxy does not answer
const REQUEST_TIMEOUT_MS = 3000;
const MIN_SHOW_MS = 4000; // a toast replaces the one on screen: keep each up at least this long
const DURATION_MS = { info: 6000, warning: 10000, error: 15000 };
const SEVERITY = { info: 0, warning: 1, error: 2 };

export function statusURL(env) {
  const explicit = (env.RALEX_STATUS_URL || "").trim();
  if (explicit) return explicit;
  const base = (env.RALEX_PROXY_URL || "http://127.0.0.1:4000/v1").trim().replace(/\/+$/, "");
  return base.replace(/\/v1$/, "") + "/ralex/status";
}

const KINDS = {
  refused: { variant: "error", title: "Ralex: request refused" },
  threshold: { variant: "warning", title: "Ralex: budget alert" },
  step_down: { variant: "info", title: "Ralex: stepped down" },
  summary: { variant: "info", title: "Ralex: today's budget" },
};
const OTHER = { variant: "info", title: "Ralex" };

export function variantOf(event) {
  return (KINDS[event.kind] || OTHER).variant;
}

// One toast for the events of one poll (the TUI shows one toast at a time, a new one replaces it):
// the title and variant of the most severe event, one line per event, oldest first.
export function toastFor(events) {
  let head;
  const lines = [];
  for (const event of events) {
    const text = String(event.text || "").replace(/\s+/g, " ").trim().replace(/^Ralex:\s*/, "");
    if (!text) continue;
    lines.push(text);
    const kind = KINDS[event.kind] || OTHER;
    if (!head || SEVERITY[kind.variant] > SEVERITY[head.variant]) head = kind;
  }
  if (!lines.length) return undefined;
  return { title: head.title, message: lines.join("\n"), variant: head.variant, duration: DURATION_MS[head.variant] };
}

export function createWatcher({ fetchImpl = globalThis.fetch, env = process.env, show, log,
                                now = () => Date.now(), setTimer = setTimeout, clearTimer = clearTimeout } = {}) {
  const url = statusURL(env);
  const startedAt = now();
  const key = (env.RALEX_AGENT_KEY || "").trim();
  let since; // last event id seen; undefined until the first answer
  let inFlight;
  let again = false;
  let failing = false;
  let lastAttempt = -Infinity;
  let pending = [];
  let lastShown = -Infinity;
  let flushTimer;
  let busy = new Set();
  let pollTimer;
  let stopped = false;
  let wantSummary = false; // a turn ended: show today's budget once the next answer comes
  let summarizedSpent; // the spend the last summary showed (no summary when nothing was spent since)

  const safeLog = (level, message) => {
    try {
      Promise.resolve(log && log(level, message)).catch(() => {});
    } catch {}
  };

  const flush = () => {
    flushTimer = undefined;
    if (stopped || !pending.length) return;
    const wait = lastShown + MIN_SHOW_MS - now();
    if (wait > 0) {
      flushTimer = setTimer(flush, wait);
      return;
    }
    const toast = toastFor(pending);
    pending = [];
    if (!toast) return;
    lastShown = now();
    try {
      Promise.resolve(show(toast)).catch((err) => safeLog("warn", `ralex-budget: cannot show a toast: ${err && err.message || err}`));
    } catch (err) {
      safeLog("warn", `ralex-budget: cannot show a toast: ${err && err.message || err}`);
    }
  };

  const summarize = (status) => {
    const spent = Number(status.spent);
    const text = typeof status.summary === "string" ? status.summary : "";
    if (!wantSummary || !text || !Number.isFinite(spent)) return;
    wantSummary = false;
    if (summarizedSpent !== undefined && Math.abs(spent - summarizedSpent) < 1e-9) return;
    summarizedSpent = spent;
    pending.push({ kind: "summary", text });
  };

  const receive = (status) => {
    if (!status || typeof status !== "object") throw new Error("the status is not a JSON object");
    if (summarizedSpent === undefined && Number.isFinite(Number(status.spent))) summarizedSpent = Number(status.spent);
    const last = Number(status.last_event_id);
    const events = Array.isArray(status.events) ? status.events : [];
    if (since === undefined) {
      // First answer (the last few events): only what happened since this plugin started is news.
      since = Number.isFinite(last) ? last : 0;
      const news = events.filter((e) => e && Date.parse(e.at) >= startedAt)
        .sort((a, b) => Number(a.id) - Number(b.id));
      if (news.length) pending.push(...news);
      summarize(status);
      if (pending.length && !flushTimer) flush();
      return false;
    }
    if (Number.isFinite(last) && last < since) {
      // The proxy restarted and numbers its events from the start again: read them from there.
      since = 0;
      return true;
    }
    const fresh = events.filter((e) => e && Number.isFinite(Number(e.id)) && Number(e.id) > since)
      .sort((a, b) => Number(a.id) - Number(b.id));
    for (const e of fresh) since = Math.max(since, Number(e.id));
    if (Number.isFinite(last) && last > since) since = last;
    if (fresh.length) pending.push(...fresh);
    summarize(status);
    if (pending.length && !flushTimer) flush();
    return false;
  };

  const pollOnce = async () => {
    lastAttempt = now();
    const target = since === undefined ? url : `${url}?since=${encodeURIComponent(since)}`;
    try {
      const response = await fetchImpl(target, {
        headers: key ? { authorization: `Bearer ${key}` } : {},
        signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
      });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      if (receive(await response.json())) again = true;
      if (failing) safeLog("info", `ralex-budget: budget status is back (${url})`);
      failing = false;
    } catch (err) {
      if (!failing) {
        safeLog("warn", `ralex-budget: cannot read the budget status at ${url}: ${err && err.message || err}; retrying quietly`);
      }
      failing = true;
    }
  };

  // Polls never overlap; a request for a poll during one runs another right after it.
  const poll = () => {
    if (stopped || (failing && now() - lastAttempt < DOWN_POLL_MS - 200)) return Promise.resolve();
    if (inFlight) {
      again = true;
      return inFlight;
    }
    inFlight = pollOnce().finally(() => {
      inFlight = undefined;
      if (again && !stopped) {
        again = false;
        poll();
      }
    });
    return inFlight;
  };

  const schedule = () => {
    if (stopped) return;
    if (pollTimer) clearTimer(pollTimer);
    pollTimer = setTimer(() => {
      pollTimer = undefined;
      poll().finally(schedule);
    }, !busy.size ? IDLE_POLL_MS : failing ? DOWN_POLL_MS : BUSY_POLL_MS);
    if (pollTimer && typeof pollTimer.unref === "function") pollTimer.unref();
  };

  const onEvent = (event) => {
    if (!event || typeof event !== "object") return;
    const props = event.properties || {};
    if (event.type === "session.status") {
      const id = props.sessionID;
      const kind = props.status && props.status.type;
      if (kind === "busy" || kind === "retry") {
        const wasIdle = busy.size === 0;
        busy.add(id);
        if (wasIdle) schedule();
        if (kind === "retry") poll();
      } else if (kind === "idle") {
        if (busy.delete(id) && busy.size === 0) {
          wantSummary = true;
          poll();
          schedule();
        }
      }
    } else if (event.type === "session.idle") {
      if (busy.delete(props.sessionID) && busy.size === 0) schedule();
      wantSummary = true;
      poll();
    } else if (event.type === "session.deleted") {
      const id = props.info && props.info.id;
      if (busy.delete(id) && busy.size === 0) schedule();
    } else if (event.type === "session.error") {
      poll();
    } else if (event.type === "message.updated") {
      const info = props.info || {};
      if (info.role === "assistant" && (info.error || (info.time && info.time.completed))) poll();
    }
  };

  const start = () => {
    poll().finally(schedule);
  };

  const stop = () => {
    stopped = true;
    if (pollTimer) clearTimer(pollTimer);
    if (flushTimer) clearTimer(flushTimer);
  };

  return { start, stop, poll, onEvent, statusURL: url, get since() { return since; } };
}

export async function server(input) {
  const client = input && input.client;
  const directory = input && input.directory;
  const log = (level, message) =>
    client?.app?.log?.({ body: { service: SERVICE, level, message } });
  const show = async (toast) => {
    const result = await client.tui.showToast({ body: toast, query: directory ? { directory } : undefined });
    if (result && result.error) throw new Error(JSON.stringify(result.error));
  };
  let watcher;
  try {
    watcher = createWatcher({ show, log });
    watcher.start();
  } catch (err) {
    try { log("error", `ralex-budget: not started: ${err && err.message || err}`); } catch {}
    return {};
  }
  return {
    event: async ({ event }) => {
      try {
        watcher.onEvent(event);
      } catch {}
    },
    dispose: async () => {
      watcher.stop();
    },
  };
}

export default { id: "ralex-budget", server };
