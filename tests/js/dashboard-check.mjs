// Type-check dashboard JSON files as Grafana's Dashboard (dashboard.ts) with tsc --noEmit.
//
//   node dashboard-check.mjs a.json b.json ... > results.json
//
// Out: {"a.json": [{"line": 34, "column": 13, "code": "TS2322", "message": "...", "text": "..."}], ...}
// with the line and column in the JSON file and the text of that line; [] for a valid file.
//
// Each file becomes a .ts file that assigns its JSON, unchanged, to a const of that type, in a
// temporary folder; one tsc run checks them all.
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = fileURLToPath(new URL(".", import.meta.url));
const tsc = join(here, "node_modules", ".bin", "tsc");
const files = process.argv.slice(2).map((f) => resolve(f));
if (files.length === 0) {
  throw new Error("usage: node dashboard-check.mjs DASHBOARD.json...");
}
const work = mkdtempSync(join(tmpdir(), "mlobs-dashboard-check-"));
const header = `import type { MlobsDashboard } from ${JSON.stringify(join(here, "dashboard.ts"))}; export const dashboard: MlobsDashboard =\n`;
const sources = new Map(); // the .ts file -> [the JSON file, its lines]
try {
  files.forEach((file, i) => {
    const text = readFileSync(file, "utf8");
    JSON.parse(text); // a file that is not JSON is an error here, not a TypeScript one
    const ts = join(work, `d${i}-${basename(file, ".json").replace(/\W/g, "_")}.ts`);
    writeFileSync(ts, header + text.trimEnd() + ";\n");
    sources.set(ts, [file, text.split("\n")]);
  });
  const config = {
    compilerOptions: {
      strict: true,
      noEmit: true,
      target: "es2022",
      module: "preserve",
      moduleResolution: "bundler",
      allowImportingTsExtensions: true,
      skipLibCheck: true,
      types: [],
      noErrorTruncation: true,
      pretty: false,
    },
    files: [...sources.keys()],
  };
  writeFileSync(join(work, "tsconfig.json"), JSON.stringify(config));
  const run = spawnSync(tsc, ["-p", join(work, "tsconfig.json")], { encoding: "utf8" });
  if (run.error) {
    throw run.error;
  }
  const results = Object.fromEntries(files.map((f) => [f, []]));
  const diagnostic = /^(.+?)\((\d+),(\d+)\): error (TS\d+): (.*)$/;
  const unexplained = [];
  for (const line of run.stdout.split("\n").filter(Boolean)) {
    const match = diagnostic.exec(line);
    const source = match && sources.get(resolve(work, match[1]));
    if (!source) {
      unexplained.push(line); // e.g. an error in dashboard.ts itself
      continue;
    }
    const [file, lines] = source;
    const jsonLine = Number(match[2]) - 1; // the header is the .ts file's first line
    results[file].push({
      line: jsonLine,
      column: Number(match[3]),
      code: match[4],
      message: match[5],
      text: (lines[jsonLine - 1] ?? "").trim(),
    });
  }
  if (unexplained.length || (run.status !== 0 && Object.values(results).every((r) => !r.length))) {
    process.stderr.write(`tsc (exit ${run.status}):\n${unexplained.join("\n")}\n${run.stderr}`);
    process.exit(2);
  }
  process.stdout.write(JSON.stringify(results) + "\n");
} finally {
  rmSync(work, { recursive: true, force: true });
}
