// Starts the real interest-tree server (the Python service, data-only: no language model) on
// a free port, for the SDK tests and the example.
import { spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

// dist/test/server.js -> the repository root.
export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..", "..", "..");

export interface RunningServer {
  baseUrl: string;
  process: ChildProcess;
  stop(): Promise<void>;
}

export async function startServer(startTimeoutMs = 180_000): Promise<RunningServer> {
  const bin = process.env.INTEREST_TREE_BIN ?? join(REPO, ".venv", "bin", "interest-tree");
  const dataDir = await mkdtemp(join(tmpdir(), "interest-tree-ts-"));
  const child = spawn(bin, ["serve", "--no-llm", "--port", "0", "--data-dir", dataDir], {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, HF_HUB_OFFLINE: "1", TRANSFORMERS_OFFLINE: "1" },
  });
  let stderr = "";
  child.stderr?.on("data", (chunk: Buffer) => {
    stderr = (stderr + chunk.toString()).slice(-4000);
  });
  const baseUrl = await new Promise<string>((resolveUrl, reject) => {
    let stdout = "";
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`server did not start in ${startTimeoutMs} ms:\n${stderr}`));
    }, startTimeoutMs);
    child.stdout?.on("data", (chunk: Buffer) => {
      stdout += chunk.toString();
      const match = /listening on ([\d.]+):(\d+)/.exec(stdout);
      if (match) {
        clearTimeout(timer);
        resolveUrl(`http://${match[1]}:${match[2]}`);
      }
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`server exited with ${code} before listening:\n${stderr}`));
    });
  });
  return {
    baseUrl,
    process: child,
    async stop() {
      if (child.exitCode === null) {
        const exited = once(child, "exit");
        child.kill("SIGTERM");
        const timer = setTimeout(() => child.kill("SIGKILL"), 15_000);
        await exited;
        clearTimeout(timer);
      }
      await rm(dataDir, { recursive: true, force: true });
    },
  };
}

export interface SampleItem {
  item_id: string;
  title: string;
  description: string;
  categories: string[];
  tags: string[];
}

export interface SampleUser {
  user_id: string;
  items: string[];
}

/** The catalog and histories the service ships as its demo sample. */
export async function loadSample(): Promise<{ items: SampleItem[]; users: SampleUser[] }> {
  const folder = join(REPO, "server", "sample");
  const catalog = JSON.parse(await readFile(join(folder, "catalog.json"), "utf8")) as {
    items: SampleItem[];
  };
  const users = JSON.parse(await readFile(join(folder, "users.json"), "utf8")) as {
    users: SampleUser[];
  };
  return { items: catalog.items, users: users.users };
}
