// Check Flux queries with libflux, the Flux front end InfluxDB runs (npm @influxdata/flux-lsp-browser).
//
//   node flux-check.mjs < queries.json > results.json
//
// In:  [{"name": "...", "query": "..."}, ...]
// Out: [{"name": "...", "valid": true|false, "errors": ["3:12 undefined identifier nosuch", ...]}, ...]
//
// `valid` is `new Flux(query).is_valid()`: libflux's parse and semantic check (types, the
// builtin functions' signatures: unknown functions or parameters, missing arguments).  It
// says only yes or no, so `errors` are the same front end's messages, as its language
// server publishes them for the query opened as a document.  One process checks them all.
import { register } from "node:module";

// The language server logs through console.info and console.log: keep stdout for the answer.
console.log = console.info = console.debug = (...args) => console.error(...args);
register("./wasm-loader.mjs", import.meta.url);
const flux = await import("@influxdata/flux-lsp-browser/flux-lsp-browser_bg.js");

async function readStdin() {
  const chunks = [];
  for await (const chunk of process.stdin) {
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString("utf8");
}

class Server {
  constructor() {
    this.lsp = new flux.Lsp();
    this.published = new Map(); // uri -> diagnostics, the first publication after didOpen
    this.lsp.onMessage((text) => {
      const message = JSON.parse(text);
      if (message.method === "textDocument/publishDiagnostics") {
        const { uri, diagnostics } = message.params;
        if (!this.published.has(uri)) {
          this.published.set(uri, diagnostics);
        }
      }
    });
    this.running = this.lsp.run();
    this.nextId = 1;
  }

  send(method, params, notification = false) {
    const message = { jsonrpc: "2.0", method, params };
    if (!notification) {
      message.id = this.nextId++;
    }
    return this.lsp.send(JSON.stringify(message));
  }

  async start() {
    await this.send("initialize", { processId: null, rootUri: null, capabilities: {} });
    await this.send("initialized", {}, true);
  }

  // Each query in a folder of its own: the server analyses the files of one folder as one package.
  async errors(query, index) {
    const uri = `file:///mlobs-flux-check/${index}/query.flux`;
    const textDocument = { uri, languageId: "flux", version: 1, text: query };
    await this.send("textDocument/didOpen", { textDocument }, true);
    for (let waited = 0; !this.published.has(uri) && waited < 5000; waited += 5) {
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    await this.send("textDocument/didClose", { textDocument: { uri } }, true);
    if (!this.published.has(uri)) {
      return ["the Flux language server published no diagnostics"];
    }
    return this.published
      .get(uri)
      .filter((d) => d.severity === 1)
      .map((d) => `${d.range.start.line + 1}:${d.range.start.character + 1} ${d.message}`);
  }
}

const queries = JSON.parse(await readStdin());
if (!Array.isArray(queries)) {
  throw new TypeError("stdin must be a JSON array of {name, query}");
}
const server = new Server();
await server.start();
const results = [];
for (const [index, { name, query }] of queries.entries()) {
  if (typeof name !== "string" || typeof query !== "string") {
    throw new TypeError(`item ${index}: name and query must be strings`);
  }
  const script = new flux.Flux(query);
  const valid = script.is_valid();
  script.free();
  results.push({ name, valid, errors: await server.errors(query, index) });
}
process.stdout.write(JSON.stringify(results) + "\n");
process.exit(0); // the language server's run() never resolves
