// Build databases step by step with the real drizzle-orm migrator, in one node process.
// Usage: node walk.mjs <plan.json>
// plan.json: {"server": <url of a database to run CREATE DATABASE from>,
//             "steps": [{"database": <name>, "template": <name>, "url": <url of database>,
//                        "folder": <migrations folder>}, ...]}
// Each step, in order: CREATE DATABASE <database> TEMPLATE <template> (an exact copy), then
// migrate(drizzle(pool), {migrationsFolder: folder}) on it, as migrate.mjs does, and the
// pool is closed (a template must have no connections when the next step copies it).
// Exit 0 on success; on any error print it and the step to stderr and exit 1 (2 for bad usage).
import { readFileSync } from "node:fs";
import pg from "pg";
import { drizzle } from "drizzle-orm/node-postgres";
import { migrate } from "drizzle-orm/node-postgres/migrator";

const [planFile] = process.argv.slice(2);
if (!planFile) {
  console.error("usage: node walk.mjs <plan.json>");
  process.exit(2);
}
const plan = JSON.parse(readFileSync(planFile, "utf8"));
const quote = (name) => '"' + name.replaceAll('"', '""') + '"';

const admin = new pg.Client({ connectionString: plan.server });
await admin.connect();
let code = 0;
let current = null;
try {
  for (const step of plan.steps) {
    current = step;
    await admin.query(
      `CREATE DATABASE ${quote(step.database)} TEMPLATE ${quote(step.template)}`,
    );
    const pool = new pg.Pool({ connectionString: step.url, max: 1 });
    try {
      await migrate(drizzle(pool), { migrationsFolder: step.folder });
    } finally {
      await pool.end();
    }
  }
} catch (error) {
  console.error("step:", JSON.stringify(current));
  console.error(error && error.stack ? error.stack : String(error));
  if (error && error.cause) console.error("cause:", error.cause);
  code = 1;
} finally {
  await admin.end();
}
process.exit(code);
