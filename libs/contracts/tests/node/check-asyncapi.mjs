// Parse and validate an AsyncAPI document with the official parser; exit 1 on any error.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const { Parser, DiagnosticSeverity } = require("@asyncapi/parser");

const file = process.argv[2];
const parser = new Parser();
const { document, diagnostics } = await parser.parse(readFileSync(file, "utf8"), { source: file });
const names = { 0: "error", 1: "warning", 2: "info", 3: "hint" };
for (const d of diagnostics) {
  console.log(`${names[d.severity]} ${d.code} at ${d.path.join("/")}: ${d.message}`);
}
const errors = diagnostics.filter((d) => d.severity === DiagnosticSeverity.Error);
if (!document || errors.length > 0) {
  console.log(`INVALID: ${errors.length} error(s)`);
  process.exit(1);
}
console.log(
  `VALID: ${document.channels().length} channels, ${document.operations().length} operations, ` +
    `${document.components().messages().length} messages`,
);
