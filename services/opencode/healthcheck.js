// Container health: OpenCode's server answers its OpenAPI document at /doc.
// Sends HTTP basic auth when the server is protected with OPENCODE_SERVER_PASSWORD.
const password = process.env.OPENCODE_SERVER_PASSWORD;
const username = process.env.OPENCODE_SERVER_USERNAME || "opencode";
const headers = password
  ? { authorization: "Basic " + Buffer.from(`${username}:${password}`).toString("base64") }
  : {};
fetch("http://127.0.0.1:4096/doc", { headers, signal: AbortSignal.timeout(4000) })
  .then((r) => process.exit(r.ok ? 0 : 1))
  .catch(() => process.exit(1));
