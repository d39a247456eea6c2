// Apply a drizzle migrations folder with the real drizzle-orm migrator (node-postgres).
// Usage: node migrate.mjs <databaseUrl> <migrationsFolder>
// Exit 0 on success; on any error print it to stderr and exit 1 (2 for bad usage).
import pg from "pg";
import { drizzle } from "drizzle-orm/node-postgres";
import { migrate } from "drizzle-orm/node-postgres/migrator";

const [databaseUrl, migrationsFolder] = process.argv.slice(2);
if (!databaseUrl || !migrationsFolder) {
  console.error("usage: node migrate.mjs <databaseUrl> <migrationsFolder>");
  process.exit(2);
}

const pool = new pg.Pool({ connectionString: databaseUrl, max: 1 });
let code = 0;
try {
  await migrate(drizzle(pool), { migrationsFolder });
} catch (error) {
  console.error(error && error.stack ? error.stack : String(error));
  if (error && error.cause) console.error("cause:", error.cause);
  code = 1;
} finally {
  await pool.end();
}
process.exit(code);
