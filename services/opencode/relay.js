// The agent container has no network interface but loopback. OpenCode reaches the proxy through
// this relay: each TCP connection to 127.0.0.1:4000 is piped to the proxy's Unix socket, which
// serves the model routes only. Errors are logged (one line each) and never stop the relay.
const net = require("node:net");

const socketPath = process.env.RALEX_AGENT_SOCKET || "/run/ralex/agent/proxy.sock";
const port = Number(process.env.RALEX_RELAY_PORT || 4000);
const log = (what) => console.error(`ralex-relay: ${what}`);

const server = net.createServer({ allowHalfOpen: true }, (client) => {
  client.setNoDelay(true); // answers arrive in pieces (headers, body, stream chunks): no Nagle wait
  const proxy = net.connect({ path: socketPath, allowHalfOpen: true });
  client.pipe(proxy).pipe(client);
  proxy.on("error", (err) => { log(`proxy socket ${socketPath}: ${err.code || err.message}`); client.destroy(); });
  client.on("error", () => proxy.destroy());
  client.on("close", () => proxy.destroy());
  proxy.on("close", () => client.destroy());
});
server.on("error", (err) => { log(`cannot listen on 127.0.0.1:${port}: ${err.code || err.message}`); process.exit(1); });
process.on("uncaughtException", (err) => log(`unexpected: ${err.stack || err}`));
server.listen(port, "127.0.0.1");
