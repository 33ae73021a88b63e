// Node module hooks that load @influxdata/flux-lsp-browser in plain Node.
//
// The package is a wasm-bindgen "bundler" build: its flux-lsp-browser_bg.js does
// `import * as wasm from "./flux-lsp-browser_bg.wasm"`, which a bundler resolves and
// Node does not, and its .js files are ES modules in a package that does not say so.
// These hooks (registered by flux-check.mjs with module.register) load the package's
// .js files as ES modules, and answer the .wasm import with a small module that
// instantiates the WebAssembly with flux-lsp-browser_bg.js as its import object and
// exports the instance's exports, the `wasm` namespace flux-lsp-browser_bg.js expects.
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

const PACKAGE = "/node_modules/@influxdata/flux-lsp-browser/";

export async function load(url, context, nextLoad) {
  if (!url.includes(PACKAGE)) {
    return nextLoad(url, context);
  }
  if (url.endsWith(".js")) {
    return nextLoad(url, { ...context, format: "module" });
  }
  if (!url.endsWith(".wasm")) {
    return nextLoad(url, context);
  }
  const compiled = new WebAssembly.Module(readFileSync(fileURLToPath(url)));
  const importModules = [...new Set(WebAssembly.Module.imports(compiled).map((i) => i.module))];
  const exportNames = WebAssembly.Module.exports(compiled).map((e) => e.name);
  // Every import module of this build is the glue beside it (./flux-lsp-browser_bg.js).
  const glue = (name) => JSON.stringify(new URL(name, url).href);
  const source = [
    'import { readFileSync } from "node:fs";',
    ...importModules.map((name, i) => `import * as imports${i} from ${glue(name)};`),
    `const compiled = new WebAssembly.Module(readFileSync(new URL(${JSON.stringify(url)})));`,
    "const instance = new WebAssembly.Instance(compiled, {",
    ...importModules.map((name, i) => `  ${JSON.stringify(name)}: imports${i},`),
    "});",
    ...exportNames.map((name) => `export const ${name} = instance.exports[${JSON.stringify(name)}];`),
  ].join("\n");
  return { format: "module", source, shortCircuit: true };
}
