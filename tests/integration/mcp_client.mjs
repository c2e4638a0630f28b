// mcp_client.mjs - a real MCP client (the official SDK, @modelcontextprotocol/sdk)
// for test_mcp.py: starts the server given on the command line over stdio,
// lists its tools, makes the calls read as JSON from stdin, prints one JSON
// object with what it got.
//
// usage: node mcp_client.mjs SDK_DIR SERVER ARGS... < '[{"name": T, "arguments": {...}}, ...]'
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";
import path from "node:path";

const [sdkDir, server, ...serverArgs] = process.argv.slice(2);
const base = path.join(sdkDir, "node_modules", "@modelcontextprotocol", "sdk", "dist", "esm");
const { Client } = await import(pathToFileURL(path.join(base, "client", "index.js")).href);
const { StdioClientTransport } = await import(pathToFileURL(path.join(base, "client", "stdio.js")).href);

const calls = JSON.parse(readFileSync(0, "utf8") || "[]");
const transport = new StdioClientTransport({ command: server, args: serverArgs, stderr: "inherit" });
const client = new Client({ name: "seerfs-test", version: "1.0.0" });
await client.connect(transport);
const out = { server: client.getServerVersion(), tools: (await client.listTools()).tools, results: [] };
for (const c of calls) {
  try {
    out.results.push(await client.callTool({ name: c.name, arguments: c.arguments ?? {} }));
  } catch (e) {
    out.results.push({ thrown: String(e && e.message ? e.message : e), code: e && e.code });
  }
}
await client.close();
process.stdout.write(JSON.stringify(out) + "\n");
