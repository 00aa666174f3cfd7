// The SDK against the real service (a Python server started here), then its retry and
// deadline behaviour against a gRPC server in this process that fails on purpose.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { once } from "node:events";
import { readFile } from "node:fs/promises";
import * as http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { after, before, describe, test } from "node:test";

import { Code, ConnectError, type ConnectRouter } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";

import {
  CatalogService,
  EventType,
  InterestService,
  InterestTreeClient,
  InvalidArgumentError,
  NotFoundError,
  UnavailableError,
  itemName,
  timestampFromDate,
  userName,
  type EventInit,
} from "../src/index.js";
import { loadSample, startServer, type RunningServer } from "./server.js";

// dist/test/ -> the package folder.
const PACKAGE = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");

describe("against a real interest-tree server", () => {
  let server: RunningServer;
  let client: InterestTreeClient;

  before(async () => {
    server = await startServer();
    client = new InterestTreeClient(server.baseUrl);
  });

  after(async () => {
    client?.close();
    await server?.stop();
  });

  test("upsert items, record events, build a tree, get attributed recommendations", async () => {
    const sample = await loadSample();
    const stored = await client.upsertItems(
      sample.items.map((item) => ({
        name: itemName(item.item_id),
        title: item.title,
        description: item.description,
        categories: item.categories,
        tags: item.tags,
      })),
    );
    assert.equal(stored.length, sample.items.length);
    assert.ok(stored.every((item) => item.updateTime !== undefined));

    const start = Date.UTC(2024, 0, 1);
    const events: EventInit[] = sample.users.flatMap((user) =>
      user.items.map((itemId, day) => ({
        user: userName(user.user_id),
        item: itemName(itemId),
        type: EventType.VIEW,
        eventTime: timestampFromDate(new Date(start + day * 86_400_000)),
      })),
    );
    assert.equal(await client.recordEvents(events, { requestId: "ts-sample-v1" }), events.length);
    // The idempotency key makes a replayed batch record nothing.
    assert.equal(await client.recordEvents(events, { requestId: "ts-sample-v1" }), 0);

    const alice = userName("alice");
    const tree = await client.buildInterestTree(alice);
    assert.equal(tree.name, "users/alice/interestTree");
    assert.equal(tree.revision, 1n);
    const labels = new Set(tree.nodes.map((node) => node.label));
    assert.ok(labels.has("Space opera"), [...labels].join(", "));
    assert.deepEqual(await client.getInterestTree(alice), tree);

    const explained = await client.explainInterests(alice);
    assert.deepEqual(
      explained.levels.map((level) => level.level),
      explained.levels.map((_, index) => index + 1),
    );

    const response = await client.recommend(alice, { pageSize: 5 });
    assert.equal(response.recommendations.length, 5);
    const seen = new Set(
      sample.users.find((user) => user.user_id === "alice")!.items.map(itemName),
    );
    const nodeIds = new Set(tree.nodes.map((node) => node.id));
    const scores = response.recommendations.map((rec) => rec.score);
    assert.deepEqual(scores, [...scores].sort((a, b) => b - a));
    for (const rec of response.recommendations) {
      assert.ok(!seen.has(rec.item), `${rec.item} was already seen`);
      assert.ok(rec.nodeIds.length > 0 && rec.nodeIds.every((id) => nodeIds.has(id)));
      assert.ok(rec.reason.startsWith("Because of your interest in"));
      const total = rec.contributions.reduce((sum, part) => sum + part.contribution, 0);
      assert.ok(Math.abs(total - rec.score) <= 1e-9 * Math.max(1, Math.abs(rec.score)));
    }

    const bySlate = await client.recommendByInterest(alice, { level: 1, pageSize: 2 });
    assert.ok(bySlate.slates.length > 0);
    const slateItems = bySlate.slates.flatMap((slate) => slate.recommendations.map((r) => r.item));
    assert.equal(new Set(slateItems).size, slateItems.length);
    for (const slate of bySlate.slates) {
      for (const rec of slate.recommendations) assert.equal(rec.nodeIds[0], slate.node);
    }

    const names: string[] = [];
    for await (const item of client.iterItems({ pageSize: 7 })) names.push(item.name);
    assert.deepEqual(names, sample.items.map((item) => itemName(item.item_id)).sort());

    await client.buildInterestTree(alice);
    const revisions: bigint[] = [];
    for await (const revision of client.iterInterestTreeRevisions(alice, { pageSize: 1 })) {
      revisions.push(revision.tree!.revision);
    }
    assert.deepEqual(revisions, [2n, 1n]);
  });

  test("the README's example is examples/quickstart.ts, and it runs", async () => {
    const readme = await readFile(join(PACKAGE, "README.md"), "utf8");
    const block = /```ts\n([\s\S]*?)```/.exec(readme)?.[1];
    const example = await readFile(join(PACKAGE, "examples", "quickstart.ts"), "utf8");
    assert.ok(block && example.endsWith(block), "README example and examples/quickstart.ts differ");
    const { stdout } = await promisify(execFile)(
      process.execPath,
      [join(PACKAGE, "dist", "examples", "quickstart.js")],
      { env: { ...process.env, INTEREST_TREE_URL: server.baseUrl }, timeout: 60_000 },
    );
    assert.match(stdout, /Space opera/);
    assert.match(stdout, /recommended: items\//);
    assert.match(stdout, /rejected: INVALID_RESOURCE_NAME \[ 'name' \]/);
  });

  test("a bad request fails with its decoded google.rpc details", async () => {
    await assert.rejects(
      client.upsertItems([
        { name: "items/ok", title: "Fine" },
        { name: "items/dracula", title: "x".repeat(513) },
        { name: "items/bad id", title: "Spaces" },
      ]),
      (error: unknown) => {
        assert.ok(error instanceof InvalidArgumentError, String(error));
        assert.equal(error.codeName, "INVALID_ARGUMENT");
        assert.equal(error.domain, "interesttree.v1");
        assert.equal(error.reason, "INVALID_ARGUMENT");
        assert.deepEqual(
          error.fieldViolations.map((violation) => violation.field),
          ["items[1].title", "items[2].name"],
        );
        assert.ok(error.fieldViolations.every((violation) => violation.description));
        assert.equal(error.attempts, 1);
        assert.match(error.requestId, /^[0-9a-f]{32}$/);
        return true;
      },
    );
    await assert.rejects(client.getItem("items/no-such-item"), (error: unknown) => {
      assert.ok(error instanceof NotFoundError, String(error));
      assert.equal(error.reason, "ITEM_NOT_FOUND");
      assert.equal(error.resourceName, "items/no-such-item");
      return true;
    });
  });
});

describe("retries and deadlines", () => {
  let server: http2.Http2Server;
  let client: InterestTreeClient;
  const seen = {
    getItem: [] as number[],
    listItems: 0,
    build: 0,
    deletes: 0,
    requestIds: [] as string[],
    headers: [] as string[],
  };
  let failGetItem = 0;
  let failDelayMs = 0;

  before(async () => {
    const routes = (router: ConnectRouter) => {
      router.service(CatalogService, {
        async getItem(request, context) {
          seen.getItem.push(context.timeoutMs() ?? -1);
          seen.headers.push(context.requestHeader.get("x-request-id") ?? "");
          if (request.name === "items/invalid") {
            throw new ConnectError("bad name", Code.InvalidArgument);
          }
          if (failGetItem > 0) {
            failGetItem--;
            await new Promise((done) => setTimeout(done, failDelayMs));
            throw new ConnectError("try again", Code.Unavailable);
          }
          return { item: { name: request.name, title: "Found" } };
        },
        async listItems() {
          if (seen.listItems++ === 0) throw new ConnectError("busy", Code.ResourceExhausted);
          return { items: [{ name: "items/a", title: "A" }] };
        },
        async deleteItems() {
          seen.deletes++;
          throw new ConnectError("down", Code.Unavailable);
        },
      });
      router.service(InterestService, {
        async buildInterestTree() {
          seen.build++;
          throw new ConnectError("down", Code.Unavailable);
        },
        async recordEvents(request) {
          seen.requestIds.push(request.requestId);
          if (seen.requestIds.length === 1) throw new ConnectError("down", Code.Unavailable);
          return { recordedCount: request.events.length };
        },
      });
    };
    server = http2.createServer(
      connectNodeAdapter({ routes, grpc: true, grpcWeb: false, connect: false }),
    );
    server.listen(0, "127.0.0.1");
    await once(server, "listening");
    const { port } = server.address() as AddressInfo;
    client = new InterestTreeClient(`http://127.0.0.1:${port}`, {
      retry: { initialBackoffMs: 10, maxBackoffMs: 40 },
    });
  });

  after(async () => {
    client?.close();
    server?.close();
  });

  test("an idempotent call is retried on UNAVAILABLE under its default deadline", async () => {
    seen.getItem.length = 0;
    seen.headers.length = 0;
    failGetItem = 2;
    const item = await client.getItem("items/x");
    assert.equal(item.title, "Found");
    assert.equal(seen.getItem.length, 3);
    // GetItem's documented default deadline is 5 s.
    assert.ok(seen.getItem[0]! > 4_000 && seen.getItem[0]! <= 5_000, String(seen.getItem));
    assert.equal(new Set(seen.headers).size, 1, "one request id for all attempts");

    // All attempts share one deadline: after two failures that took 200 ms each, the third
    // attempt has at least 400 ms less left.
    seen.getItem.length = 0;
    failGetItem = 2;
    failDelayMs = 200;
    await client.getItem("items/x", { timeoutMs: 2_000 });
    failDelayMs = 0;
    const [first, , third] = seen.getItem;
    assert.ok(first! > 1_500 && third! < first! - 350, String(seen.getItem));
  });

  test("retries stop after maxAttempts and the error says how many were made", async () => {
    failGetItem = 10;
    await assert.rejects(client.getItem("items/x"), (error: unknown) => {
      assert.ok(error instanceof UnavailableError, String(error));
      assert.equal(error.attempts, 4);
      return true;
    });
    failGetItem = 0;
  });

  test("RESOURCE_EXHAUSTED is retried too; other codes are not", async () => {
    const page = await client.listItems();
    assert.equal(page.items.length, 1);
    assert.equal(seen.listItems, 2);
    seen.getItem.length = 0;
    await assert.rejects(client.getItem("items/invalid"), InvalidArgumentError);
    assert.equal(seen.getItem.length, 1);
  });

  test("calls that are not idempotent are never retried", async () => {
    await assert.rejects(client.buildInterestTree("users/a"), (error: unknown) => {
      assert.ok(error instanceof UnavailableError);
      assert.equal(error.attempts, 1);
      return true;
    });
    assert.equal(seen.build, 1);
    await assert.rejects(client.deleteItems(["items/a"]), UnavailableError);
    assert.equal(seen.deletes, 1);
    await assert.rejects(client.deleteItems(["items/a"], { allowMissing: true }), UnavailableError);
    assert.equal(seen.deletes, 5);
  });

  test("RecordEvents is retried with the same idempotency key", async () => {
    const recorded = await client.recordEvents([{ user: "users/a", item: "items/a" }]);
    assert.equal(recorded, 1);
    assert.equal(seen.requestIds.length, 2);
    assert.ok(seen.requestIds[0]);
    assert.equal(seen.requestIds[0], seen.requestIds[1]);
  });

  test("an explicit timeout replaces the default deadline", async () => {
    seen.getItem.length = 0;
    await client.getItem("items/x", { timeoutMs: 300 });
    // Far below the 5 s default (the wire format may round the 300 ms up a little).
    assert.ok(seen.getItem[0]! < 500, String(seen.getItem));
  });
});
